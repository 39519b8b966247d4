"""A polite download client for survey archives.

What it promises (issue 6, "behaviour of a good client"):

- a bounded number of requests in flight at once, however many threads ask;
- retries with exponential backoff (and jitter) on timeouts, dropped
  connections, HTTP 429 and 5xx, never on other 4xx; ``Retry-After`` honoured;
- downloads written to a temporary name in the destination folder and renamed
  only when whole and valid, so a killed job never leaves half a file;
- a truncated or corrupt file (short body, undecodable FITS) fetched again;
- a file already in the cache, and valid, never fetched again; while one
  thread or process fetches a file into the cache, others asking for it wait
  for it (a lock per file) instead of fetching it too;
- credentials taken from environment variables or ``~/.netrc``, sent only as an
  HTTP basic-auth header and never written to a log, a file or a message.

The same :class:`ArchiveRoot` reads a local mirror folder with the archive's
layout, so institutes that keep a copy of the SDSS SAS need no network.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import netrc
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests

try:  # POSIX: lock cache files across processes too (shards run in parallel)
    import fcntl
except ImportError:  # pragma: no cover - Windows: threads only
    fcntl = None

from clumpcat.errors import InputError, NetworkError

__all__ = [
    "RetryPolicy",
    "Credentials",
    "HttpClient",
    "ArchiveRoot",
    "RemoteError",
    "NotFoundError",
    "CorruptFileError",
    "TransferError",
    "find_credentials",
    "redact_url",
    "host_of",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth another try: rate limiting and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
_CHUNK = 1 << 16


class RemoteError(NetworkError):
    """A request failed for good (after retries, or at once for a 4xx).

    Attributes
    ----------
    host : str
        ``host[:port]`` of the service, never with credentials.
    url : str
        The URL requested, credentials removed.
    reason : str
        Short text for a ledger entry.
    transient : bool
        True when the failure was the network's (timeouts, refused
        connections, 429/5xx after every retry) and a later run may succeed.
    """

    def __init__(self, host: str, url: str, reason: str, transient: bool):
        self.host = host
        self.url = url
        self.reason = reason
        self.transient = transient
        self.message = f"{host}: {reason} ({url})"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class NotFoundError(RemoteError):
    """The archive answered that the file does not exist (HTTP 404/410 or no file in the mirror)."""


class CorruptFileError(RemoteError):
    """A file stayed unreadable after every retry, or is corrupt in a local mirror."""


class TransferError(Exception):
    """Raised by a ``validate`` callable when a downloaded file is truncated or corrupt.

    The client treats it like a dropped connection: it deletes the partial
    file and tries again.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Parameters
    ----------
    retries : int
        Further attempts after the first one (0 = try once).
    backoff_s : float
        Delay before the first retry; doubled at each further retry, with
        jitter of up to 50 % to keep clients from retrying in lockstep.
    backoff_max_s : float
        Upper bound of one backoff delay.
    timeout_s : float
        Connect timeout and read timeout (the longest silence tolerated while
        a response streams in).
    retry_after_max_s : float
        Longest ``Retry-After`` the client agrees to wait; a longer one is
        capped (and logged).
    """

    retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 60.0
    retry_after_max_s: float = 600.0

    def __post_init__(self):
        problems = []
        if self.retries < 0:
            problems.append(f"retries must be >= 0, got {self.retries}")
        for name in ("backoff_s", "backoff_max_s", "retry_after_max_s"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            problems.append(f"timeout_s must be > 0, got {self.timeout_s}")
        if problems:
            raise InputError("retry policy: " + "; ".join(problems))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        ``Retry-After`` (when the server sent one) wins over a shorter backoff.
        """
        base = min(self.backoff_max_s, self.backoff_s * (2.0**attempt))
        wait = base * (0.5 + 0.5 * random.random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max_s))
        return wait


@dataclass(frozen=True)
class Credentials:
    """HTTP basic-auth credentials; the password never appears in ``repr``."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


def find_credentials(
    host: str,
    username_env: str,
    password_env: str,
    netrc_file: str | Path | None = None,
) -> Credentials:
    """Credentials for ``host`` from environment variables, else ``~/.netrc``.

    Parameters
    ----------
    host : str
        Host name of the service (no port), the ``machine`` of a netrc entry.
    username_env, password_env : str
        Names of the environment variables holding the user name and password.
    netrc_file : str or Path, optional
        netrc file to read; default ``$NETRC`` or ``~/.netrc``.

    Returns
    -------
    Credentials

    Raises
    ------
    InputError
        If neither source holds credentials for the host. The message names
        the variables and the file, never a value.
    """
    user, password = os.environ.get(username_env), os.environ.get(password_env)
    if user and password:
        return Credentials(user, password)
    path = Path(netrc_file or os.environ.get("NETRC") or Path.home() / ".netrc")
    if path.exists():
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError) as exc:
            # The parse error quotes the offending line, which may hold a password.
            raise InputError(
                f"{path}: cannot parse the netrc file (line {getattr(exc, 'lineno', '?')})"
            ) from None
        if entry and entry[0] and entry[2]:
            return Credentials(entry[0], entry[2])
    raise InputError(
        f"no credentials for {host}: set the environment variables {username_env} and "
        f"{password_env}, or add 'machine {host} login ... password ...' to {path}"
    )


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, without any user information."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def redact_url(url: str) -> str:
    """A URL with any ``user:password@`` part removed, safe for a log."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=host_of(url)))


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short_reason(exc: BaseException) -> str:
    """A one-line reason for a requests exception (no URLs, no headers)."""
    text = str(exc)
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if isinstance(exc, requests.Timeout) or "timed out" in low or "timeout" in low:
        return "timed out"
    if "name or service not known" in low or "nodename nor servname" in low or "resolve" in low:
        return "host name not resolved"
    if "reset" in low:
        return "connection reset"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "incomplete" in low or "ended" in low:
        return "connection closed mid-transfer (truncated response)"
    return type(exc).__name__


class HttpClient:
    """Thread-safe HTTP client with bounded parallelism and retries.

    Parameters
    ----------
    max_parallel : int
        Requests in flight at once across every thread using this client.
    policy : RetryPolicy
        Retries, backoff and timeouts.
    auth : Credentials, optional
        Basic-auth credentials sent with every request of this client.
    user_agent : str
        ``User-Agent`` header, so archive operators can see who asks.

    Notes
    -----
    Each thread keeps its own :class:`requests.Session` (connection reuse
    without sharing a session across threads).
    """

    def __init__(
        self,
        *,
        max_parallel: int = 4,
        policy: RetryPolicy | None = None,
        auth: Credentials | None = None,
        user_agent: str = "clumpcat (https://github.com/clumpcat; polite survey client)",
    ):
        if max_parallel < 1:
            raise InputError(f"--max-parallel must be >= 1, got {max_parallel}")
        self.max_parallel = int(max_parallel)
        self.policy = policy or RetryPolicy()
        self._auth = auth
        self._user_agent = user_agent
        self._slots = threading.BoundedSemaphore(self.max_parallel)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self._user_agent
            if self._auth is not None:
                session.auth = (self._auth.username, self._auth.password)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every session this client opened."""
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        if self._auth is not None:
            for secret in (self._auth.password, quote(self._auth.password, safe="")):
                if secret:
                    text = text.replace(secret, "***")
        return text

    def _fail(self, url: str, reason: str, transient: bool, cls=RemoteError) -> RemoteError:
        return cls(host_of(url), redact_url(url), self._redact(reason), transient)

    # -- the retry loop ---------------------------------------------------------
    def _attempts(
        self, url: str, params: Mapping[str, object] | None, consume: Callable[[requests.Response], T]
    ) -> T:
        """Run ``consume(response)`` for the first good response, retrying as the policy says."""
        policy = self.policy
        shown = redact_url(url)
        last = "no attempt made"
        for attempt in range(policy.retries + 1):
            retry_after = None
            try:
                with self._slots:
                    session = self._session()
                    with session.get(
                        url, params=params, stream=True, timeout=(policy.timeout_s, policy.timeout_s)
                    ) as response:
                        status = response.status_code
                        if status in RETRY_STATUSES:
                            retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                            last = f"HTTP {status} {response.reason or ''}".strip()
                        elif status in (404, 410):
                            raise self._fail(url, f"HTTP {status}: not found", False, NotFoundError)
                        elif status in (401, 403):
                            raise self._fail(
                                url, f"HTTP {status}: access refused (check the credentials)", False
                            )
                        elif status >= 400:
                            raise self._fail(url, f"HTTP {status} {response.reason or ''}".strip(), False)
                        else:
                            return consume(response)
            except RemoteError:
                raise
            except TransferError as exc:
                last = self._redact(f"bad or truncated file ({exc})")
            except requests.RequestException as exc:
                last = _short_reason(exc)
            if attempt < policy.retries:
                wait = policy.delay(attempt, retry_after)
                if retry_after is not None and retry_after > policy.retry_after_max_s:
                    log.warning("%s asked to wait %.0f s; waiting %.0f s", host_of(url), retry_after, wait)
                log.info("%s: %s; retry %d/%d in %.2f s", shown, last, attempt + 1, policy.retries, wait)
                time.sleep(wait)
        corrupt = last.startswith("bad or truncated file")
        raise self._fail(
            url,
            f"{last} after {policy.retries + 1} attempt(s)",
            transient=not corrupt,
            cls=CorruptFileError if corrupt else RemoteError,
        )

    # -- public API -------------------------------------------------------------
    def get_text(self, url: str, params: Mapping[str, object] | None = None) -> str:
        """GET a small text response (e.g. an SQL query result), with retries.

        Raises
        ------
        RemoteError
            After the retries, or at once on a non-retryable 4xx.
        """

        def consume(response: requests.Response) -> str:
            body = self._read_body(response)
            return body.decode(response.encoding or "utf-8", errors="replace")

        return self._attempts(url, params, consume)

    def _read_body(self, response: requests.Response, sink=None) -> bytes:
        """Read a body, checking its length against ``Content-Length``."""
        expected = response.headers.get("Content-Length")
        chunks = [] if sink is None else None
        size = 0
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if sink is None:
                chunks.append(chunk)
            else:
                sink.write(chunk)
        encoded = response.headers.get("Content-Encoding", "identity") not in ("", "identity")
        if expected is not None and not encoded and expected.isdigit() and int(expected) != size:
            raise TransferError(f"received {size} of {expected} bytes")
        return b"".join(chunks) if sink is None else b""

    def download(
        self,
        url: str,
        dest: str | Path,
        validate: Callable[[Path], T] | None = None,
        params: Mapping[str, object] | None = None,
    ) -> T | Path:
        """Download ``url`` to ``dest`` through a temporary file.

        Parameters
        ----------
        url : str
            What to fetch.
        dest : str or Path
            Final path. Its folder is created. The body goes to
            ``.{name}.part-{pid}-{thread}`` beside it and is renamed over
            ``dest`` only when complete and, with ``validate``, valid.
        validate : callable, optional
            ``validate(path)`` reads the temporary file and returns what it
            parsed; it raises :class:`TransferError` when the file is
            truncated or corrupt, and the client fetches it again.
        params : mapping, optional
            Query parameters.

        Returns
        -------
        object
            ``validate``'s result, or ``dest`` when no validator is given.

        Raises
        ------
        NotFoundError
            HTTP 404 or 410.
        CorruptFileError
            The file stayed corrupt after every retry.
        RemoteError
            Other failures, after the retries (``transient`` set) or at
            once on another 4xx.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{threading.get_ident()}")

        def consume(response: requests.Response):
            try:
                with open(tmp, "wb") as handle:
                    self._read_body(response, sink=handle)
                result = validate(tmp) if validate is not None else dest
                os.replace(tmp, dest)
                return result
            finally:
                tmp.unlink(missing_ok=True)

        result = self._attempts(url, params, consume)
        log.debug("downloaded %s -> %s", redact_url(url), dest)
        return dest if validate is None else result


class ArchiveRoot:
    """Files of an archive, from a URL (cached) or a local mirror folder.

    Parameters
    ----------
    root : str or Path
        ``http(s)://...`` base URL, ``file://`` URL, or a folder holding the
        archive's layout (a mirror).
    cache : str or Path, optional
        Folder that receives downloads, with the archive's relative layout;
        required for a URL root, unused for a mirror.
    client : HttpClient, optional
        Client for a URL root; required for one.

    Examples
    --------
    >>> root = ArchiveRoot("/data/sdss-mirror")          # doctest: +SKIP
    >>> frame = root.fetch("dr17/eboss/.../frame-r-...fits.bz2", read_frame)  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, cache: str | Path | None = None, client: HttpClient | None = None):
        text = str(root)
        scheme = urlsplit(text).scheme.lower()
        if scheme in ("http", "https"):
            if cache is None or client is None:
                raise InputError(
                    f"archive root {redact_url(text)}: a URL root needs a cache folder and a client"
                )
            self.url: str | None = text.rstrip("/") + "/"
            self.folder: Path | None = None
        elif scheme == "file":
            self.url, self.folder = None, Path(urlsplit(text).path)
        elif scheme and len(scheme) > 1:
            raise InputError(f"archive root {redact_url(text)}: use http(s)://, file:// or a folder")
        else:
            self.url, self.folder = None, Path(text)
        if self.folder is not None and not self.folder.is_dir():
            raise InputError(f"archive root {self.folder}: no such folder (give a URL or a local mirror)")
        self.cache = Path(cache) if cache is not None else None
        self.client = client
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextlib.contextmanager
    def _file_lock(self, relpath: str):
        """Hold the lock of one cache file: other threads and processes wait for it."""
        with self._locks_guard:
            lock = self._locks.setdefault(relpath, threading.Lock())
        with lock:
            if fcntl is None:
                yield
                return
            lock_path = self.cache / f"{relpath}.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(lock_path, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def is_local(self) -> bool:
        """True for a mirror folder."""
        return self.folder is not None

    @property
    def host(self) -> str:
        """Host of a URL root, or the mirror folder."""
        return host_of(self.url) if self.url else str(self.folder)

    def fetch(self, relpath: str, load: Callable[[Path], T]) -> T:
        """Return ``load(path)`` of an archive file, downloading it if needed.

        A cached copy is used when ``load`` accepts it; a corrupt cached copy
        is deleted and fetched again. A mirror file is read in place.

        Raises
        ------
        NotFoundError
            The file is not in the archive (or the mirror).
        CorruptFileError
            The file is corrupt in the mirror, or stayed corrupt after the retries.
        RemoteError
            The archive could not be reached.
        InputError
            ``relpath`` is absolute or climbs out with ``..`` (it is built
            from table values: run, camcol, field).
        """
        parts = Path(relpath).parts
        if not parts or Path(relpath).is_absolute() or ".." in parts or "\0" in relpath:
            raise InputError(f"archive path {relpath[:80]!r} would leave the archive root or the cache")
        if self.folder is not None:
            path = self.folder / relpath
            if not path.is_file():
                raise NotFoundError(str(self.folder), str(path), "not in the mirror", transient=False)
            try:
                return load(path)
            except TransferError as exc:
                raise CorruptFileError(str(self.folder), str(path), f"corrupt file ({exc})", False) from None
        dest = self.cache / relpath
        with self._file_lock(relpath):
            if dest.is_file():
                try:
                    return load(dest)
                except TransferError as exc:
                    log.warning("cached %s is corrupt (%s); fetching it again", dest, exc)
                    dest.unlink(missing_ok=True)
            return self.client.download(self.url + relpath, dest, validate=load)
