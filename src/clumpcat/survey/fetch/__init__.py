"""Survey access: SDSS frames from the SAS and HSC-SSP PDR3 cutouts from the DAS.

Modules
-------
http
    A polite HTTP client (bounded parallelism, retries, atomic downloads,
    credentials from the environment or ``~/.netrc``) and archive roots that
    are URLs or local mirrors.
sdss
    SDSS ugriz cutouts cut from calibrated frames.
hsc
    HSC grizy cutouts from the Data Access Service.
cli
    ``clumpcat fetch sdss|hsc``.
"""

from clumpcat.survey.fetch.common import FetchResult
from clumpcat.survey.fetch.http import ArchiveRoot, Credentials, HttpClient, RetryPolicy

__all__ = ["ArchiveRoot", "Credentials", "FetchResult", "HttpClient", "RetryPolicy"]
