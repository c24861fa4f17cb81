"""The mail store: Maildir per user, a quarantine folder, a relay hold, POP3 maildrops."""
from .maildir import (FOLDERS, Maildrop, MaildropLocked, MailStore, MessageDeleted, NoSuchMessage,
                      WriteSteps, uid_of)

__all__ = ["FOLDERS", "MailStore", "Maildrop", "MaildropLocked", "MessageDeleted", "NoSuchMessage", "WriteSteps",
           "uid_of"]
