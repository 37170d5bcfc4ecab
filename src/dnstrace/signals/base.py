"""What a signal declares, once, as data: ``SignalSpec`` with its typed Options.

A signal's folder (``signals/<name>/``) holds its kernel program, its Source
(``source.py``), its ABI declaration (``abi.py``) and, in ``spec.py``, one
``SIGNAL = SignalSpec(...)``: the name, what ``dnstrace trace <name> --help`` says, the
table columns, a frozen dataclass of Options with their defaults, how Options become
Sources and, optionally, which events ``dnstrace trace`` shows. The registry
(``signals/registry.py``) lists the signals, one line each.

Options come from two places, and the signal sees neither: the agent maps config keys
onto Options fields (``config_options``, see ``options_from_config``); ``dnstrace trace``
maps command-line flags onto them (``cli/trace.py`` reads the ``Flag`` each field may carry
in its metadata, declared with ``option(default, Flag(...))``). Fields without a flag are
set from the config only, or from trace's common flags (``--pid``, ``--min-latency``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from dnstrace.columns import Column
from dnstrace.flow import Source

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Event = dict[str, Any]
EventFilter = Callable[[Event], bool]


@dataclass(frozen=True)
class Flag:
    """How ``dnstrace trace`` spells one Options field on the command line.

    A bool field is a switch (it flips the default); other fields take a value, turned
    into the field's type by ``parse`` (the text itself when None). A ``repeat`` field is
    a tuple: the flag may be given several times and adds one element each time.
    """

    name: str  # e.g. "--libc-rescan-interval"
    help: str
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # may raise DnstraceError: the CLI reports it as a usage error
    repeat: bool = False
    choices: tuple[str, ...] | None = None


FLAG_KEY = "dnstrace.flag"  # the dataclass field metadata key a Flag is kept under


def option(default: Any, flag: Flag | None = None) -> Any:
    """A field of an Options dataclass: its default and, when it has one, its command-line flag."""
    return field(default=default, metadata={FLAG_KEY: flag} if flag else {})


def flag_of(options_field: dataclasses.Field[Any]) -> Flag | None:
    flag = options_field.metadata.get(FLAG_KEY)
    return flag if isinstance(flag, Flag) else None


class Config(Protocol):
    """What ``options_from_config`` reads: ``dnstrace.config.Config`` (values already parsed)."""

    def __getitem__(self, key: str) -> Any: ...


OptionsT = TypeVar("OptionsT", bound="DataclassInstance")


@dataclass(frozen=True)
class SignalSpec(Generic[OptionsT]):
    name: str  # dnstrace trace <name>, and the name in agent.signals
    help: str  # one line for --help
    description: str  # what it shows and how it is captured, for `trace <name> --help`
    columns: tuple[Column, ...]  # table layout (JSON output carries every field)
    options: type[OptionsT]  # a frozen dataclass; every field has a default
    make_sources: Callable[[OptionsT], list[Source]]
    # Which events `dnstrace trace` shows, from the Options (None: every event; pid/comm/min-latency are generic).
    make_filter: Callable[[OptionsT], EventFilter | None] | None = None
    examples: tuple[str, ...] = ()
    # When the agent (not `dnstrace trace`) starts this signal: which config key sets which Options field.
    # Values are already parsed by the config's key table, in the field's own unit (lists become tuples).
    # Fields not listed keep their defaults.
    config_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(self.config_options.values()) - names)
        if unknown:
            raise TypeError(f"signal {self.name}: config_options name no field of {self.options.__name__}: {unknown}")

    def options_from_config(self, config: Config) -> OptionsT:
        """The Options the agent starts this signal with: defaults, then the mapped config keys."""
        values = {name: _immutable(config[key]) for key, name in self.config_options.items()}
        return self.options(**values)

    def event_filter(self, options: OptionsT) -> EventFilter | None:
        return self.make_filter(options) if self.make_filter else None


def _immutable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
