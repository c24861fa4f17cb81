"""The mail store: Maildir per user, a quarantine folder, a relay hold, POP3 maildrops."""
from .group_commit import WriteSteps
from .maildir import FOLDERS, MailStore
from .maildrop import Maildrop, MaildropLocked, MessageDeleted, NoSuchMessage
from .names import uid_of

__all__ = ["FOLDERS", "MailStore", "Maildrop", "MaildropLocked", "MessageDeleted", "NoSuchMessage", "WriteSteps",
           "uid_of"]
