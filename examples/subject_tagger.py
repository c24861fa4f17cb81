"""Example plugin: flag messages whose Subject holds a keyword scammers like.

    forgelab serve --plugin examples/subject_tagger.py

Settings (in a policy: ``[defences.subject-keywords]``): ``keywords``, a list of words.
"""
from forgelab import Verdict, hookimpl

DEFAULT_KEYWORDS = ["urgent", "wire transfer", "gift card", "password expired"]


class SubjectKeywords:
    name = "subject-keywords"

    def __init__(self, settings: dict):
        self.keywords = [k.lower() for k in settings.get("keywords", DEFAULT_KEYWORDS)]

    @hookimpl
    def forgelab_message(self, message):
        subject = str(message.get("Subject", "")).lower()
        found = [k for k in self.keywords if k in subject]
        if found:
            return Verdict(self.name, "fail", f"the Subject contains {', '.join(repr(k) for k in found)}")
        return Verdict(self.name, "pass", "no scam keyword in the Subject")


def forgelab_plugin(settings):
    """Called by forgelab with the policy's settings for this plugin."""
    return SubjectKeywords(settings)
