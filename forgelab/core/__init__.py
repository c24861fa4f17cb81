"""The core: one message's path from a protocol event to an outcome (pipeline, policy, events)."""
