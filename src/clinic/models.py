"""Every table of the clinic, imported so ``Base.metadata`` is complete (Alembic, tests)."""

from clinic.accounts import (
    review,  # noqa: F401 - decisions on doctor sign-ups
    specialties,  # noqa: F401 - the managed specialty list
)
from clinic.core import audit  # noqa: F401 - the audit trail's table
from clinic.core.db import Base
from clinic.features import feature_modules

for _module in feature_modules("models"):
    pass  # importing each feature's models registers its tables

metadata = Base.metadata

__all__ = ["metadata"]
