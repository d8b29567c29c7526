"""Request and response models that document the API in /openapi.json.

``BKJOB`` maps a bk-job operation name to its request model, ``JOBFLEET`` a (method, path
under /api/jobfleet/v1) to its own; ``openapi.document`` puts them in the schema.
"""

from jobfleet.api.models.bkjob import BKJOB
from jobfleet.api.models.envelope import Envelope
from jobfleet.api.models.jobfleet import JOBFLEET

__all__ = ["BKJOB", "JOBFLEET", "Envelope"]
