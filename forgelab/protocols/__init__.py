"""The protocol cores: SMTP and POP3 as sans-IO state machines (bytes in, events and bytes out)."""
