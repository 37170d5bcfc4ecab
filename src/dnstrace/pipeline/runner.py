"""The agent's data path: signals -> enrichment -> sinks, with a clean start and a clean stop.

``Pipeline`` is what ``dnstrace agent``, ``dnstrace top`` and ``dnstrace findings``
run. It builds the sources of every configured signal (a ``SignalSpec`` of
``signals.registry``, given Options from the config keys it maps), starts them one
signal at a time so that a signal the kernel cannot support is reported in one log
line while the others keep running, feeds
every event batch through the enricher, then to every *stage*, then to every
*sink*, ticks stages and sinks about once a second, and on SIGTERM/SIGINT (or
``stop()``, or the end of ``duration_s``) detaches every probe and closes stages
and sinks (the shipper flushes its spool there).

Which sinks: ``sink_modules`` (default ``SINK_MODULES``: shipper + metrics, each
built by its module's ``make_sink(config)``) plus ``extra_sinks``. Interactive tools
pass ``sink_modules=()`` (nothing shipped) or only the metrics module.

Every tick, ``LossMonitor`` turns the sources' loss counters (ring buffer full, kernel
misses, sampling, full tables) into ``agent`` events that go to stages and sinks like
any other: the findings engine, top, metrics and the collector see what the agent lost.

Stages (``Stage``) are sinks whose output re-enters the stream: the findings engine
is one. Events reach stages before sinks; whatever a stage's ``tick()`` returns
(e.g. events of kind "finding") is handed to every sink like any other event, so
the shipper ships findings and metrics counts them. Derived events do not go back
through the stages (no loops). Before the first event, ``bind(sinks)`` shows each
stage the sinks it feeds (the findings engine keeps those with ``set_findings``).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from dnstrace import log
from dnstrace.errors import DnstraceError, EnvironmentProblem, UsageError
from dnstrace.flow import Sink, Source
from dnstrace.log import status
from dnstrace.pipeline.loop import Runner
from dnstrace.pipeline.losses import LossMonitor
from dnstrace.signals.base import SignalSpec
from dnstrace.signals.registry import all_signals
from dnstrace.stop import StopFlag

# Each exposes ``make_sink(config) -> Sink | None`` (None = disabled by the config).
SINK_MODULES = ("dnstrace.pipeline.shipping", "dnstrace.sinks.metrics")
METRICS_MODULE = "dnstrace.sinks.metrics"
ENRICH_MODULE = "dnstrace.enrich.enricher"

# Log a failing sink or enricher at most this often (the agent must not flood its own log).
ERROR_LOG_INTERVAL_S = 30.0

def available_targets() -> dict[str, SignalSpec[Any]]:
    """Every signal by name (``dnstrace trace <name>``), from ``signals.registry``."""
    return all_signals()


def known_signal_names() -> set[str]:
    """Every signal name a config may use."""
    return set(available_targets())


class _SignalRunner(Runner):
    """A Runner that starts signal by signal and keeps going when one of them cannot start."""

    def __init__(self, pipeline: Pipeline):
        super().__init__([], stop=pipeline.stop_flag)
        self.pipeline = pipeline

    def start(self) -> None:
        pipeline = self.pipeline
        for signal_name in pipeline.signals:
            if self.stop.is_set():
                break
            try:
                sources = pipeline.make_signal_sources(signal_name)
                started_here: list[Source] = []
                try:
                    for source in sources:
                        self.sources.append(source)
                        source.start()
                        started_here.append(source)
                except BaseException:
                    for source in reversed(sources):  # a failed start may hold half-attached probes
                        try:
                            source.close()
                        except Exception as err:
                            self.log.warning("detach failed", source=source.name, error=str(err))
                    raise
            except UsageError:
                raise
            except DnstraceError as err:
                pipeline.failed_signals[signal_name] = err.message
                self.log.warning("signal cannot start; continuing without it", signal=signal_name,
                                 reason=err.message, **({"hint": err.hint} if err.hint else {}))
                continue
            except Exception as err:  # an unexpected failure in one signal must not stop the others
                pipeline.failed_signals[signal_name] = f"{type(err).__name__}: {err}"
                self.log.error("signal failed to start; continuing without it", signal=signal_name,
                               error=f"{type(err).__name__}: {err}")
                continue
            self.started.extend(started_here)
            pipeline.attached_signals.append(signal_name)
            self.log.debug("signal attached", signal=signal_name, sources=[s.name for s in started_here])
        if not self.started and not self.stop.is_set():
            reasons = "; ".join(f"{name}: {why}" for name, why in pipeline.failed_signals.items())
            raise EnvironmentProblem(
                f"no signal could start ({reasons or 'no signals configured'})",
                hint="run 'dnstrace doctor' to see which kernel features are missing",
            )


class Pipeline:
    """Sources of the configured signals -> enrichment -> stages -> sinks, until stopped."""

    def __init__(self, config, extra_sinks: Iterable[Sink] = (), signals: list[str] | None = None,
                 stages: Iterable[Sink] = (), sink_modules: Iterable[str] | None = None):
        self.config = config
        self.signals = list(dict.fromkeys(signals if signals is not None else config["agent.signals"]))
        self.extra_sinks = list(extra_sinks)
        self.stages = list(stages)
        self.sink_modules = tuple(SINK_MODULES if sink_modules is None else sink_modules)
        self.stop_flag = StopFlag()
        self.log = log.get("pipeline")
        self.sinks: list[Sink] = []
        self.attached_signals: list[str] = []
        self.failed_signals: dict[str, str] = {}
        self.ready = threading.Event()  # set once every signal that can start is attached
        self.running = False
        self.last_loop_monotonic = time.monotonic()  # liveness: the loop ticks about once a second
        self._runner: _SignalRunner | None = None
        self.losses = LossMonitor(host=config["agent.host_id"] if config is not None and "agent.host_id" in config
                                  else "")
        self._enricher = None
        self._counters = {"batches": 0, "events": 0, "derived_events": 0, "enrich_errors": 0, "sink_errors": 0,
                          "stage_errors": 0, "agent_events": 0}
        self._last_error_log: dict[str, float] = {}
        self._targets: dict[str, SignalSpec[Any]] | None = None
        self._validate_signals()

    # --- building ------------------------------------------------------------------

    def _validate_signals(self) -> None:
        known = known_signal_names()
        unknown = [name for name in self.signals if name not in known]
        if unknown:
            raise UsageError(
                f"agent.signals: unknown signal {', '.join(repr(n) for n in unknown)}",
                hint="known signals: " + ", ".join(sorted(known)),
            )
        if not self.signals:
            raise UsageError("agent.signals is empty: nothing to trace")

    def make_signal_sources(self, signal_name: str) -> list[Source]:
        if self._targets is None:
            self._targets = available_targets()
        spec = self._targets[signal_name]  # names were checked by _validate_signals
        return list(spec.make_sources(spec.options_from_config(self.config)))

    def make_sinks(self) -> list[Sink]:
        """The sinks of ``sink_modules`` that the config enables, then ``extra_sinks``."""
        sinks = []
        for module_name in self.sink_modules:
            sink = importlib.import_module(module_name).make_sink(self.config)
            if sink is not None:
                sinks.append(sink)
        return sinks + self.extra_sinks

    def _make_enricher(self):
        return importlib.import_module(ENRICH_MODULE).Enricher(self.config)

    # --- running -------------------------------------------------------------------

    def run(self, duration_s: float | None = None, on_ready: Callable[[], None] | None = None) -> None:
        """Block until SIGTERM/SIGINT, ``stop()`` or ``duration_s``; always detaches and closes sinks."""
        self.running = True
        self.last_loop_monotonic = time.monotonic()
        try:
            self.sinks = self.make_sinks()
            for watcher in [s for s in self.sinks if hasattr(s, "watch_gauges")]:
                for sink in self.sinks:
                    gauges = getattr(sink, "gauges", None)
                    if callable(gauges):
                        watcher.watch_gauges(sink.name, gauges)  # e.g. the spool's depth on /metrics
            for stage in self.stages:
                bind = getattr(stage, "bind", None)
                if bind is not None:
                    bind(list(self.sinks))
            self._enricher = self._make_enricher()
            self._runner = _SignalRunner(self)

            def ready() -> None:
                if self.stop_flag.is_set():  # stopped while attaching: not ready, about to detach
                    return
                parts = ", ".join(self.attached_signals)
                if self.failed_signals:
                    parts += "; not started: " + ", ".join(self.failed_signals)
                status(f"dnstrace: attached ({parts}); Ctrl-C to stop")
                self.ready.set()
                if on_ready:
                    on_ready()

            self._runner.run(self._on_events, duration_s=duration_s, on_tick=self._on_tick, on_ready=ready)
        finally:
            self.ready.clear()
            self._close_sinks()
            self.running = False

    def stop(self) -> None:
        """End ``run()`` from another thread (within about a second)."""
        self.stop_flag.set()

    def _on_events(self, events: list[dict]) -> None:
        self.last_loop_monotonic = time.monotonic()
        self._counters["batches"] += 1
        self._counters["events"] += len(events)
        if self._enricher is not None:
            try:
                enriched = self._enricher.enrich(events)
                if enriched is not None:
                    events = enriched
            except Exception as err:  # unenriched events are better than none
                self._counters["enrich_errors"] += 1
                self._log_error("enrich", "enrichment failed; events passed on unenriched", err)
        for stage in self.stages:
            try:
                stage.handle(events)
            except Exception as err:
                self._counters["stage_errors"] += 1
                self._log_error(f"stage:{stage.name}", "stage failed to take events", err, stage=stage.name)
        self._deliver(events)

    def _deliver(self, events: list[dict]) -> None:
        for sink in self.sinks:
            try:
                sink.handle(events)
            except Exception as err:
                self._counters["sink_errors"] += 1
                self._log_error(f"sink:{sink.name}", "sink failed to take events", err, sink=sink.name)

    def _on_tick(self, now_ns: int) -> None:
        self.last_loop_monotonic = time.monotonic()
        if self._runner is not None:
            # Sinks that can lose events (the shipper's spool) report them like sources do.
            loss_sinks = [sink for sink in self.sinks or () if getattr(sink, "reports_losses", False)]
            agent_events = self.losses.check([*self._runner.started, *loss_sinks], now_ns)
            if agent_events:  # not enriched: they are about the agent itself
                self._counters["agent_events"] += len(agent_events)
                for stage in self.stages:
                    try:
                        stage.handle(agent_events)
                    except Exception as err:
                        self._counters["stage_errors"] += 1
                        self._log_error(f"stage:{stage.name}", "stage failed to take events", err, stage=stage.name)
                self._deliver(agent_events)
        for stage in self.stages:
            try:
                derived = stage.tick(now_ns)
            except Exception as err:
                self._counters["stage_errors"] += 1
                self._log_error(f"stage:{stage.name}", "stage tick failed", err, stage=stage.name)
                continue
            if derived:
                self._counters["derived_events"] += len(derived)
                self._deliver(list(derived))
        for sink in self.sinks:
            try:
                sink.tick(now_ns)
            except Exception as err:
                self._counters["sink_errors"] += 1
                self._log_error(f"sink:{sink.name}", "sink tick failed", err, sink=sink.name)

    def _close_sinks(self) -> None:
        # Stages first: what they still hold (e.g. findings not yet shipped) goes to the sinks.
        for stage in self.stages:
            try:
                flush = getattr(stage, "flush", None)
                derived = flush() if flush is not None else None
                if derived and self.sinks:
                    self._counters["derived_events"] += len(derived)
                    self._deliver(list(derived))
                stage.close()
            except Exception as err:
                self.log.error("stage close failed", stage=stage.name, error=f"{type(err).__name__}: {err}")
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:
                self.log.error("sink close failed", sink=sink.name, error=f"{type(err).__name__}: {err}")

    def _log_error(self, what: str, message: str, err: Exception, **fields) -> None:
        now = time.monotonic()
        if now - self._last_error_log.get(what, -1e9) >= ERROR_LOG_INTERVAL_S:
            self._last_error_log[what] = now
            self.log.error(message, error=f"{type(err).__name__}: {err}", **fields)

    # --- introspection -------------------------------------------------------------

    def stats(self) -> dict:
        """Counters per source and per sink, plus the pipeline's own."""
        sources = {}
        if self._runner is not None:
            for source in self._runner.started:
                try:
                    sources[source.name] = source.stats()
                except Exception as err:
                    sources[source.name] = {"stats_error": str(err)}
        sinks = {}
        for sink in list(self.stages) + list(self.sinks):
            try:
                sinks[sink.name] = sink.stats()
            except Exception as err:
                sinks[sink.name] = {"stats_error": str(err)}
        enricher: dict = {}
        if self._enricher is not None and hasattr(self._enricher, "stats"):
            try:
                enricher = self._enricher.stats()
            except Exception as err:
                enricher = {"stats_error": str(err)}
        return {
            "pipeline": dict(self._counters),
            "agent_losses": dict(self.losses.totals),
            "enricher": enricher,
            "signals": {"attached": list(self.attached_signals), "failed": dict(self.failed_signals)},
            "sources": sources,
            "sinks": sinks,
        }
