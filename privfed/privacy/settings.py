"""Moved to :mod:`privfed.config.privacy`; re-exported until every caller imports it there."""
from privfed.config.privacy import ACCOUNTANTS, MECHANISMS, NOISES, PrivacyConfig, check_accountant  # noqa: E501, F401
