"""resolv.conf as a process sees it: ``/proc/PID/root/etc/resolv.conf``, cached per mount namespace.

Containers (and ``ip netns exec``) give processes their own /etc/resolv.conf; the
one on the host says nothing about them. ``ResolvConfCache.for_pid`` reads the
file through the process's root, keyed by its mount namespace so a thousand
processes of one container cost one read (and a stat to notice edits, or none
within ``recheck_s``); the cache is bounded (LRU, evictions counted). The DNS
source and enrichment both read resolv.conf through it.
Parsing follows glibc's resolv.conf(5): nameserver (max 3 used), search/domain
(the last one wins), options ndots/timeout/attempts (clamped as glibc does),
rotate, single-request, single-request-reopen, use-vc, edns0.

Events carry it in two shapes: the enricher's ``enrichment_fields`` (nameservers, search,
``resolv_options`` words, what top and the collector show) and the lookups signal's
``resolv_conf`` (``as_dict``). ``ResolvConf.of_event`` reads either back into the one
typed object, with the same option reader as ``parse``, so consumers (the findings)
read typed fields and never parse option words themselves.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dnstrace.bounded import BoundedDict
from dnstrace.enrich import proc

GLIBC_MAXNS = 3
DEFAULT_TIMEOUT_S = 5
DEFAULT_ATTEMPTS = 2
DEFAULT_NDOTS = 1
MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    ndots: int = DEFAULT_NDOTS
    timeout_s: int = DEFAULT_TIMEOUT_S
    attempts: int = DEFAULT_ATTEMPTS
    rotate: bool = False
    single_request: bool = False
    single_request_reopen: bool = False
    use_vc: bool = False
    edns0: bool = False
    source: str | None = None  # the path read, None for defaults (file missing)
    extra_nameservers: tuple[str, ...] = field(default=())  # listed beyond glibc's 3: ignored by glibc

    def as_dict(self) -> dict[str, Any]:
        """The lookups signal's ``resolv_conf`` field: every setting by name (``from_dict`` reads it back)."""
        return {
            "nameservers": list(self.nameservers), "search": list(self.search), "ndots": self.ndots,
            "timeout": self.timeout_s, "attempts": self.attempts, "rotate": self.rotate,
            "single_request": self.single_request, "single_request_reopen": self.single_request_reopen,
            "use_vc": self.use_vc, "edns0": self.edns0,
        }

    def options(self) -> list[str]:
        """The settings as resolv.conf ``options`` words: ndots, timeout, attempts, then the flags set."""
        options = [f"ndots:{self.ndots}", f"timeout:{self.timeout_s}", f"attempts:{self.attempts}"]
        return options + [name.replace("_", "-") for name in _FLAG_FIELDS if getattr(self, name)]

    def enrichment_fields(self) -> dict[str, Any]:
        """What enrichment adds to an event: the process's nameservers, search list and options
        (``from_enrichment_fields`` reads them back)."""
        return {"nameservers": list(self.nameservers), "search": list(self.search), "resolv_options": self.options()}

    @classmethod
    def from_dict(cls, conf: Mapping[str, Any]) -> ResolvConf:
        """The inverse of ``as_dict`` (missing or bad values: glibc's defaults, clamped as ``parse`` does)."""
        settings = _Settings()
        for name in ("ndots", "timeout", "attempts"):
            if conf.get(name) is not None:
                settings.set(name, conf[name])
        for name in _FLAG_FIELDS:
            settings.flags[name] = bool(conf.get(name))
        return settings.conf(tuple(conf.get("nameservers") or ()), tuple(conf.get("search") or ()))

    @classmethod
    def from_enrichment_fields(cls, fields: Mapping[str, Any]) -> ResolvConf:
        """The inverse of ``enrichment_fields``: its option words read as ``parse`` reads an options line."""
        settings = _Settings()
        for option in fields.get("resolv_options") or ():
            settings.option(str(option))
        return settings.conf(tuple(fields.get("nameservers") or ()), tuple(fields.get("search") or ()))

    @classmethod
    def of_event(cls, event: Mapping[str, Any]) -> ResolvConf | None:
        """The resolv.conf an event carries, in whichever shape: the enricher's fields (``nameservers``,
        ``search``, ``resolv_options``) when they list nameservers, else the lookups signal's
        ``resolv_conf`` dict, else the enricher's fields as they are; None when it carries neither."""
        if event.get("nameservers"):
            return cls.from_enrichment_fields(event)
        conf = event.get("resolv_conf")
        if isinstance(conf, dict):
            return cls.from_dict(conf)
        if any(name in event for name in _ENRICHMENT_NAMES):
            return cls.from_enrichment_fields(event)
        return None

    def server_index(self, address: str) -> int | None:
        """Position (0-based) of ``address`` in the nameserver list, None if not listed."""
        try:
            return self.nameservers.index(address)
        except ValueError:
            return None


_FLAG_FIELDS = ("rotate", "single_request", "single_request_reopen", "use_vc", "edns0")
_FLAG_OPTIONS = {name.replace("_", "-"): name for name in _FLAG_FIELDS}  # "use-vc" -> "use_vc"
_ENRICHMENT_NAMES = ("nameservers", "search", "resolv_options")


def _clamped(value: Any, low: int, high: int, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):  # bad values (text, None...) keep the default
        return default
    return max(low, min(high, number))


class _Settings:
    """The settings an ``options`` line (or its words in an event) sets, glibc's defaults before."""

    LIMITS = {"ndots": (0, 15), "timeout": (1, 30), "attempts": (1, 5)}

    def __init__(self) -> None:
        self.values = {"ndots": DEFAULT_NDOTS, "timeout": DEFAULT_TIMEOUT_S, "attempts": DEFAULT_ATTEMPTS}
        self.flags = dict.fromkeys(_FLAG_FIELDS, False)

    def set(self, name: str, value: Any) -> None:
        low, high = self.LIMITS[name]
        self.values[name] = _clamped(value, low, high, self.values[name])

    def option(self, word: str) -> None:
        """One option word (``timeout:2``, ``rotate``); unknown ones are ignored, as glibc does."""
        name, _, value = word.partition(":")
        if name in self.values:
            self.set(name, value)
        elif name in _FLAG_OPTIONS:
            self.flags[_FLAG_OPTIONS[name]] = True

    def conf(self, nameservers: tuple[str, ...], search: tuple[str, ...], source: str | None = None,
             extra_nameservers: tuple[str, ...] = ()) -> ResolvConf:
        flags = self.flags
        return ResolvConf(nameservers=nameservers, search=search, ndots=self.values["ndots"],
                          timeout_s=self.values["timeout"], attempts=self.values["attempts"],
                          rotate=flags["rotate"], single_request=flags["single_request"],
                          single_request_reopen=flags["single_request_reopen"], use_vc=flags["use_vc"],
                          edns0=flags["edns0"], source=source, extra_nameservers=extra_nameservers)


def _normalise_address(text: str) -> str | None:
    """Nameserver entries may carry a scope (fe80::1%eth0); keep what the wire shows."""
    address = text.split("%", 1)[0]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def parse(text: str, source: str | None = None) -> ResolvConf:
    """Parse resolv.conf text; unknown lines and bad values are ignored, as glibc does."""
    nameservers: list[str] = []
    search: tuple[str, ...] = ()
    settings = _Settings()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        keyword, args = words[0], words[1:]
        if keyword == "nameserver" and args:
            address = _normalise_address(args[0])
            if address:
                nameservers.append(address)
        elif keyword in ("search", "domain") and args:
            search = tuple(a.rstrip(".").lower() for a in args if a != ".")[:32]
        elif keyword == "options":
            for option in args:
                settings.option(option)
    return settings.conf(tuple(nameservers[:GLIBC_MAXNS]), search, source=source,
                         extra_nameservers=tuple(nameservers[GLIBC_MAXNS:]))


def _path(pid: int) -> str:
    return f"{proc.process_root(pid)}/etc/resolv.conf"


def file_signature(pid: int) -> tuple | None:
    """What tells two versions of the file apart without reading it (None: no file)."""
    try:
        st = os.stat(_path(pid))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def read_for_pid(pid: int) -> ResolvConf | None:
    """The resolv.conf ``pid`` sees, or None if the process is gone. A missing file = defaults."""
    path = _path(pid)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES)
    except FileNotFoundError:
        return ResolvConf(nameservers=("127.0.0.1",)) if proc.read_comm(pid) is not None else None
    except OSError:
        return None
    return parse(data.decode("utf-8", "replace"), source=path)


class ResolvConfCache:
    """resolv.conf per mount namespace, bounded (LRU).

    A cached entry is reused only while the file's signature (device, inode,
    mtime, size) is unchanged: one stat instead of a read, and a mount namespace
    whose inode number was recycled, or an edited file, is read again. With
    ``recheck_s`` an entry checked that recently is reused without the stat (for
    callers on a per-event path). A process that already exited gets what its
    mount namespace showed last.
    """

    def __init__(self, max_entries: int = 1024, recheck_s: float = 0.0):
        self.max_entries = max_entries
        self.recheck_ns = int(recheck_s * 1e9)
        # mnt ns inode -> (file signature, ResolvConf, checked at monotonic ns)
        self._by_mntns: BoundedDict = BoundedDict(max_entries)
        self.reads = 0

    @property
    def evictions(self) -> int:
        return self._by_mntns.evicted

    def for_pid(self, pid: int, mnt_ns: int | None = None) -> ResolvConf | None:
        """The resolv.conf ``pid`` sees; ``mnt_ns`` when the caller knows it already (saves a readlink)."""
        if mnt_ns is None:
            mnt_ns = proc.ns_inode(pid, "mnt")
            if mnt_ns is None:
                return None
        cached = self._by_mntns.get(mnt_ns)
        now = time.monotonic_ns()
        if cached and self.recheck_ns and now - cached[2] < self.recheck_ns:
            self._by_mntns.move_to_end(mnt_ns)
            return cached[1]
        signature = file_signature(pid)
        if cached and cached[0] == signature:
            self._by_mntns.put(mnt_ns, (signature, cached[1], now))  # recently used only when still valid
            return cached[1]
        conf = read_for_pid(pid)
        self.reads += 1
        if conf is None:  # the process is gone
            return cached[1] if cached else None
        self._by_mntns.put(mnt_ns, (signature, conf, now))
        return conf
