"""Whether the Hugging Face hub can be used now: one bounded probe instead of the libraries' retries.

``from_pretrained`` retries a failed connection several times with backoff (about 46 s measured here before it gives
up); every loader of fairdiff asks :func:`download_allowed` first and otherwise loads from the local cache alone
(``local_files_only=True``), so an unreachable hub is an error in seconds.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

#: Seconds the one probe of the hub may take before the hub counts as unreachable.
HUB_PROBE_TIMEOUT_S = 3.0


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set: the hub is then never contacted, whatever ``allow_download`` says."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in (
        "1", "ON", "YES", "TRUE")


def hub_unreachable_reason(timeout: float | None = None) -> str | None:
    """Why the Hugging Face hub cannot be used now, or None when it answers.

    One HEAD request to the hub's endpoint (``HF_ENDPOINT``), bounded by ``timeout`` seconds (default
    :data:`HUB_PROBE_TIMEOUT_S`) including the name lookup, which sockets cannot bound: the request runs in a
    daemon thread. Any HTTP answer, even an error status, means the hub is reachable. ``HF_HUB_OFFLINE=1`` counts as
    unreachable without a request.
    """
    from huggingface_hub import constants

    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    timeout = HUB_PROBE_TIMEOUT_S if timeout is None else timeout
    url = constants.ENDPOINT
    outcome: dict[str, str | None] = {}

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome["reason"] = None
        except urllib.error.HTTPError:
            outcome["reason"] = None  # it answered
        except Exception as err:  # URLError, timeouts, refused connections: the hub cannot be used
            outcome["reason"] = f"{url} is unreachable ({type(err).__name__}: {getattr(err, 'reason', err)})"

    thread = threading.Thread(target=probe, name="fairdiff-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if "reason" not in outcome:
        return f"{url} did not answer within {timeout:g} s"
    return outcome["reason"]


def download_allowed(allow_download: bool) -> tuple[bool, str | None]:
    """Whether to let a ``from_pretrained`` call reach the hub: (allowed, why not). Probes only if asked to download,
    so the caller loads from the local cache alone (``local_files_only=True``) when the hub would only time out."""
    if not allow_download:
        return False, None
    reason = hub_unreachable_reason()
    return reason is None, reason
