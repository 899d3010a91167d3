"""The Ray engine (``vecaudit scan --engine ray``): one scan across many machines, same findings, same ledger.

Pass 1 runs on Ray tasks, one per read partition (:mod:`auditor.partitions`): each task opens the store with the
same connector code (credentials from the worker's environment, never in task arguments), resolves the batches,
fingerprints every point and runs the pointwise detectors (``pointwise_observe``: injection, secrets, PII, tenant
markers). The driver takes the partitions' results in partition order — the order ``iter_batches`` reads — so its
point table, every detector's view and the ledger rows are those of the in-process engine; it runs the other
detectors' ``observe`` there (cheap, and they gather collection-wide state) and writes the ledger in bulk as one
scan. Pass 2 runs on the driver over the gathered vectors; re-embedding (``vector-text-mismatch``) runs on a pool
of Ray actors, CPU by default, GPU in fp16 with ``gpus_per_embedder``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.batching import resolve_batch
from auditor.connector import Connector, SourceURI
from auditor.context import ScanContext, ScanSettings
from auditor.detector import Detector
from auditor.embedder import MAX_PRECISION_LOSS, Embedder, resolve_model
from auditor.engine import Scanner, ScanOptions, ScanResult, _Carry
from auditor.errors import ConfigError, ConnectorError
from auditor.findings import Finding, point_key
from auditor.ledger.session import Ledger
from auditor.partitions import Partition, PartitionPlan
from auditor.progress import progress_bar
from auditor.types import CollectionInfo, FieldMap, RecordBatch

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "vecaudit[ray]"'
ENGINES = ("inprocess", "ray")
#: Partitions per worker when the plan is sized automatically: enough to balance uneven partitions.
PARTITIONS_PER_WORKER = 4
MAX_PARTITION_POINTS = 200_000


def require_ray() -> Any:
    """The ``ray`` module, or a usage error (exit 2) with the install command."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray engine needs the ray package, which is not installed",
                          hint=f"install it with: {INSTALL_HINT}") from None
    return ray


@dataclass
class RayOptions:
    """``[engine]`` of vecaudit.toml / ``--engine ray --ray-address``."""

    #: Ray cluster address ("auto", "ray://head:10001", "host:6379"); None starts a local cluster.
    address: str | None = None
    #: CPUs of the local cluster / CPU re-embedding actors (None: all the cluster has).
    workers: int | None = None
    #: GPUs per re-embedding actor (0: CPU actors); fp16 on the GPU when > 0 and the cluster has GPUs.
    gpus_per_embedder: float = 0.0
    #: How many times Ray retries a partition whose task failed (worker died, store error) before the scan is
    #: recorded partial.
    partition_retries: int = 2
    #: Points per read partition (None: sized from the collection and the cluster's CPUs).
    target_points: int | None = None
    #: Where the shared neighbour graph is built beyond the exact limit: "driver" (as in process), "distributed"
    #: (the same graph's cells searched on the workers, auditor.ray_graph) or "auto" (distributed when the cluster
    #: spans more than one machine: on one machine Ray tasks add no CPUs to the driver's threads). Findings are the
    #: same either way: the workers search the in-process graph's own cells.
    graph: str = "auto"


def connect(options: RayOptions) -> bool:
    """Join the cluster at ``options.address`` or start a local one; True when this call started Ray (and so must
    shut it down). An unreachable cluster is a usage error naming the address."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:
            # a local cluster's start-up chatter (it enabled token authentication, the secure default) is not news
            quiet = logging.getLogger("ray")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                ray.init(num_cpus=options.workers, **kwargs)
            finally:
                quiet.setLevel(level)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = options.address or "a new local cluster"
        raise ConfigError(f"cannot start or join the Ray cluster at {where}: {str(e).splitlines()[0][:300]}",
                          hint="start one with `ray start --head`, or drop --ray-address for a local one") from e
    return True


# -- pass 1 on workers --------------------------------------------------------------------------------
@dataclass
class _Job:
    """What every partition task needs, put into the object store once. No credential: the connector is rebuilt
    on the worker from its class and URI, and reads its credentials from the worker's environment."""

    connector_cls: type[Connector]
    uri: str
    collection: str | None
    vector: str | None
    options: dict[str, Any]
    info: CollectionInfo
    field_map: FieldMap
    settings: ScanSettings
    collection_key: str
    detectors: list[tuple[type[Detector], dict[str, Any]]]
    batch_size: int


@dataclass
class _PartitionResult:
    index: int
    batches: list[RecordBatch]
    #: Per batch, per remote detector (job order), the findings of its ``observe``.
    found: list[list[list[Finding]]]
    notes: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)
    points: int = 0


def task_uri(connector: Connector) -> str:
    """The URI a worker opens: never one that carries a secret (credentials travel by environment only)."""
    uri = connector.uri
    if uri.raw != ":memory:" and uri.redacted() != uri.raw and "***" in uri.redacted():
        raise ConfigError(f"the store URI {uri.redacted()} carries a key-like query value",
                          hint="Ray tasks take credentials from the workers' environment only: remove it from the "
                               f"URI and export {connector.credentials_env or 'the store credential'} on the workers")
    return uri.raw


def read_partition(job: _Job, partition: Partition) -> _PartitionResult:
    """Ray task: read one partition, fingerprint its points and run the pointwise detectors on it."""
    started = time.perf_counter()
    conn = job.connector_cls(SourceURI.parse(job.uri), collection=job.collection, vector=job.vector,
                             options=job.options)
    ctx = ScanContext(info=job.info, field_map=job.field_map, collection_key=job.collection_key,
                      settings=job.settings, connector=conn)
    try:
        detectors = [cls(**params) for cls, params in job.detectors]
        for det in detectors:
            Scanner._guard(ctx, det, "begin", lambda d=det: d.begin(ctx) or ())
        result = _PartitionResult(index=partition.index, batches=[], found=[])
        for page, _ in conn.iter_partition(partition, batch_size=job.batch_size):
            batch = resolve_batch(page, job.field_map, job.info.dim)
            result.batches.append(batch)
            result.found.append([
                Scanner._guard(ctx, det, "observe", lambda d=det, b=batch: list(d.observe(b, ctx)))
                for det in detectors
            ])
            result.points += len(batch)
        result.notes = list(ctx.notes)
        result.failed = set(ctx.shared.get("failed_detectors", ()))
        result.seconds = {**ctx.seconds, "partition": time.perf_counter() - started}
        return result
    finally:
        ctx.close()
        conn.close()


class RayScanner(Scanner):
    """A :class:`~auditor.engine.Scanner` whose pass 1 and re-embedding run on a Ray cluster (see the module)."""

    def __init__(
        self,
        ledger: Ledger,
        connector: Connector,
        detectors: Sequence[Detector],
        options: ScanOptions,
        ray_options: RayOptions | None = None,
    ) -> None:
        super().__init__(ledger, connector, detectors, options)
        self.ray_options = ray_options or RayOptions()
        self._uri = task_uri(connector)  # refused before anything starts

    def run(self) -> ScanResult:
        # Ray's driver prints task retries and worker errors to stdout from a thread: stdout is for the scan's data
        # (`--format json | jq`), so whatever Ray says during the scan goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            started = connect(self.ray_options)
            try:
                return super().run()
            finally:
                if started:
                    require_ray().shutdown()

    def _cluster_cpus(self) -> int:
        return max(1, int(require_ray().cluster_resources().get("CPU", 1)))

    def plan(self, info: CollectionInfo) -> PartitionPlan:
        """The read partitions: about ``PARTITIONS_PER_WORKER`` per CPU of the cluster (a multiple of the batch
        size, so the pages are those of the in-process engine), all in one for a store admitting one reader."""
        batch = self.options.batch_size
        target = self.ray_options.target_points
        if target is None:
            per = math.ceil(max(info.count, 1) / (PARTITIONS_PER_WORKER * self._cluster_cpus()))
            target = min(max(per, batch), MAX_PARTITION_POINTS)
        target = max(batch, math.ceil(target / batch) * batch)
        plan = self.connector.partitions(target_points=target)
        if plan.exclusive and len(plan) > 1:  # read one after the other anyway: open the store once
            plan = self.connector.partitions(target_points=max(info.count, 1) + batch)
        return plan

    def _pass_one(
        self,
        ctx: ScanContext,
        active: list[Detector],
        findings: list[Finding],
        carry: _Carry | None = None,
        carried: list[tuple[Finding, str]] | None = None,
    ) -> Any:
        ray = require_ray()
        plan = self.plan(ctx.info)
        if not plan.remote:
            ctx.note(f"ray engine: {plan.reason}: pass 1 ran on the driver")
            return super()._pass_one(ctx, active, findings, carry, carried)
        remote = [d for d in active if d.pointwise_observe]
        how = "one partition" if len(plan) == 1 else f"{len(plan)} partitions"
        why = f" ({plan.reason})" if plan.reason else ""
        if plan.exclusive:
            why += " read by one worker at a time (the store admits one reader)"
        ctx.note(f"ray engine: pass 1 on {how}{why}; {', '.join(d.name for d in remote) or 'no detector'} "
                 f"on the workers")
        job = ray.put(_Job(
            connector_cls=type(self.connector), uri=self._uri, collection=self.connector.collection,
            vector=self.connector.vector, options=dict(self.connector.options), info=ctx.info,
            field_map=self.options.field_map, settings=self.options.settings, collection_key=ctx.collection_key,
            detectors=[(type(d), dict(d.params)) for d in remote], batch_size=self.options.batch_size,
        ))
        if plan.exclusive:
            self.connector.close()  # its client holds the store's only reader slot; reopened on next use
        task = ray.remote(read_partition).options(
            num_cpus=1, max_retries=self.ray_options.partition_retries, retry_exceptions=True)
        queue = list(plan.partitions)
        limit = 1 if plan.exclusive else len(queue)
        pending: dict[Any, Partition] = {}
        done: dict[int, _PartitionResult] = {}
        applied = 0
        walls: list[float] = []
        started = time.perf_counter()
        bar = progress_bar(total=ctx.info.count or None, desc=f"scan on ray (0/{len(plan)} partitions)", unit="pt",
                           enabled=self.options.show_progress)
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    part = queue.pop(0)
                    pending[task.remote(job, part)] = part
                ready, _ = wait(list(pending))
                for ref in ready:
                    part = pending.pop(ref)
                    try:
                        done[part.index] = ray.get(ref)
                    except Exception as e:
                        # the partitions before the failed one are taken first in any engine: finish and apply
                        # them, so what the scan records (partial, the points before it) never depends on which
                        # task happened to finish first
                        for before_ref, before in sorted(pending.items(), key=lambda item: item[1].index):
                            if before.index < part.index:
                                with contextlib.suppress(Exception):
                                    done[before.index] = ray.get(before_ref)
                        while applied in done and applied < part.index:
                            self._apply(ctx, active, remote, done.pop(applied), findings, carry, carried)
                            applied += 1
                        raise ConnectorError(
                            f"partition {part.index} ({part.label}) failed after "
                            f"{self.ray_options.partition_retries + 1} attempt(s): {_cause(e)}",
                            hint="the other partitions' points are not recorded; re-run the scan",
                        ) from e
                    walls.append(done[part.index].seconds.get("partition", 0.0))
                    bar.update(done[part.index].points)
                    bar.set_description(f"scan on ray ({applied + len(done)}/{len(plan)} partitions)")
                while applied in done:
                    self._apply(ctx, active, remote, done.pop(applied), findings, carry, carried)
                    applied += 1
        except BaseException:
            for ref in pending:  # Ctrl-C or a failed partition: stop the rest, never a silent gap
                with contextlib.suppress(Exception):  # a Ctrl-C may have stopped the local cluster already
                    ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
        elapsed = time.perf_counter() - started
        ctx.add_seconds("ray.partitions", sum(walls))
        rate = len(ctx.table) / max(elapsed, 1e-9)
        ctx.note(f"ray engine: pass 1 read {len(ctx.table):,} points in {elapsed:.1f} s ({rate:,.0f} points/s); a "
                 f"partition task took {np.mean(walls):.2f} s on average, {max(walls):.2f} s at most")
        return None

    def _apply(
        self,
        ctx: ScanContext,
        active: list[Detector],
        remote: list[Detector],
        result: _PartitionResult,
        findings: list[Finding],
        carry: _Carry | None,
        carried: list[tuple[Finding, str]] | None,
    ) -> None:
        """Take one partition's result, in partition order: what ``Scanner._pass_one`` does per batch, with the
        pointwise detectors' findings coming from the worker."""
        where = {d.name: i for i, d in enumerate(remote)}
        known = set(ctx.notes)
        ctx.notes.extend(n for n in dict.fromkeys(result.notes) if n not in known)
        if result.failed:
            ctx.shared.setdefault("failed_detectors", set()).update(result.failed)
        for stage, seconds in result.seconds.items():
            if stage.endswith(".observe"):
                ctx.add_seconds(stage, seconds)
        for batch, found in zip(result.batches, result.found, strict=True):
            batch.offset = len(ctx.table)
            ctx.table.append(batch)
            fresh = batch
            if carry is not None and carry.detectors and carried is not None:
                fresh = self._carry_unchanged(ctx, batch, carry, carried)
            kept = {point_key(p) for p in fresh.ids} if fresh is not batch else None
            for det in active:
                b = fresh if carry is not None and det.name in carry.detectors else batch
                if det.name in where:
                    got = found[where[det.name]]
                    if b is not batch and kept is not None:
                        got = [f for f in got if f.point_id is not None and point_key(f.point_id) in kept]
                    findings.extend(got)
                elif len(b):
                    findings.extend(self._guard(ctx, det, "observe", lambda d=det, b=b: list(d.observe(b, ctx))))

    # -- pass 2: re-embedding on an actor pool ---------------------------------------------------------
    def _pass_two(self, ctx: ScanContext, active: list[Detector], findings: list[Finding]) -> None:
        self._distributed_graph(ctx, max((d.neighbours_needed() for d in active), default=0))
        pool: EmbedderPool | None = None
        if any("embedder" in d.requires for d in active) and ctx.embedder_if_loaded() is None:
            pool = EmbedderPool(ctx.settings, self.ray_options, show_progress=self.options.show_progress)
            if ctx.state is not None:
                pool.remember(ctx.state.encodings if ctx.reuse_state else None)
            ctx._embedder = pool  # what ctx.embedder() hands every detector from now on
        try:
            super()._pass_two(ctx, active, findings)
        finally:
            if pool is not None:
                if pool.texts:
                    ctx.note(pool.describe())
                pool.shutdown()


    def _distributed_graph(self, ctx: ScanContext, k: int) -> None:
        """With ``graph = "distributed"`` (or ``"auto"`` on a cluster of several machines), build the shared graph on
        the workers before any detector asks for it (beyond the exact limit only: up to it every engine builds the
        exact graph; not for incremental scans, which patch the graph they kept)."""
        from auditor.graph import EXACT_LIMIT

        valid = ctx.valid_mask()
        if self.graph_mode() != "distributed" or k <= 0 or ctx.state is not None:
            return
        if int(np.count_nonzero(valid)) <= EXACT_LIMIT:
            return
        from auditor.ray_graph import GraphReport, distributed_graph

        started = time.perf_counter()
        report = GraphReport()
        graph = distributed_graph(ctx.table.vectors, k, ctx.info.distance, valid, seed=ctx.settings.seed,
                                  report=report)
        ctx._graph = graph  # what ctx.graph() hands every detector from now on
        seconds = time.perf_counter() - started
        ctx.add_seconds("graph.all", seconds)
        ctx.note(f"ray engine: neighbour graph ({k}-NN) built in {seconds:.1f} s: {report.describe()}; per-tenant "
                 "lists on the driver")

    def graph_mode(self) -> str:
        """Where this scan builds the shared graph: ``"driver"`` or ``"distributed"`` (``"auto"`` resolved: the
        workers when the cluster has more than one live node)."""
        if self.ray_options.graph != "auto":
            return self.ray_options.graph
        nodes = sum(1 for node in require_ray().nodes() if node.get("Alive"))
        return "distributed" if nodes > 1 else "driver"


def wait(refs: list[Any]) -> tuple[list[Any], list[Any]]:
    """``ray.wait`` for one result, returning every half second so Ctrl-C reaches the driver."""
    ray = require_ray()
    ready, rest = ray.wait(refs, num_returns=1, timeout=0.5)
    return list(ready), list(rest)


def _cause(error: BaseException) -> str:
    """The first line of the error a task raised (Ray wraps it with the remote traceback)."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


# -- re-embedding on an actor pool --------------------------------------------------------------------
class EmbedActor:
    """One re-embedding worker (a Ray actor): the in-process :class:`~auditor.embedder.Embedder` on ``device``; on a
    GPU the weights are cast to fp16 when the probe sentences keep cosine >= 1 - MAX_PRECISION_LOSS to fp32."""

    def __init__(self, model: str | None, device: str, batch_size: int, fp16: bool) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.embedder = Embedder(model, device=device, batch_size=batch_size, precision="fp32" if fp16 else "auto")
        self.embedder._load()
        self.precision = self.embedder.active_precision
        self.agreement = self.embedder.precision_agreement
        if fp16:
            self._half()

    def _half(self) -> None:
        from auditor.embedder import _PROBE_TEXTS

        reference = self.embedder._encode_raw(list(_PROBE_TEXTS), "fp32")
        # a private copy: the process-wide model cache (auditor.embedder) keeps its fp32 weights for anyone else
        model = copy.deepcopy(self.embedder._load())
        self.embedder._model = model
        model.half()
        reduced = self.embedder._encode_raw(list(_PROBE_TEXTS), "fp16")
        self.agreement = float(np.min(np.sum(reference * reduced, axis=1)))
        if self.agreement >= 1.0 - MAX_PRECISION_LOSS:
            self.precision = "fp16"
        else:
            model.float()
            log.warning("fp16 disagrees with fp32 (min cosine %.4f): using fp32", self.agreement)

    def info(self) -> dict[str, Any]:
        return {"dim": self.embedder.dim, "precision": self.precision, "device": str(self.embedder.device),
                "agreement": self.agreement}

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """One chunk, encoded as the in-process embedder encodes one chunk (same batches: the same numbers)."""
        return self.embedder._encode_raw(texts, self.precision)


class EmbedderPool(Embedder):
    """An :class:`~auditor.embedder.Embedder` whose model runs on a pool of Ray actors: CPU actors (one per worker
    CPU) by default, GPU actors in fp16 when ``gpus_per_embedder`` > 0 and the cluster has GPUs. Texts are
    chunked exactly as in one process, then spread over the actors."""

    def __init__(self, settings: ScanSettings, options: RayOptions, *, show_progress: bool = True) -> None:
        super().__init__(settings.model, device=None, batch_size=settings.embed_batch_size)
        self.model_arg = settings.model
        self.options = options
        self.show_progress = show_progress
        self._actors: list[Any] = []
        self._dim = 0
        self.gpu = False
        #: Why GPU actors were asked for and CPU actors run (said in the scan note), else None.
        self.fallback: str | None = None
        self.texts = 0
        self.seconds = 0.0

    def _load(self) -> Any:
        if self._model is None:
            ray = require_ray()
            resources = ray.cluster_resources()
            gpus = float(resources.get("GPU", 0))
            per_gpu = float(self.options.gpus_per_embedder or 0)
            self.gpu = per_gpu > 0 and gpus >= per_gpu
            if self.gpu:
                count = max(1, int(gpus // per_gpu))
                actor = ray.remote(EmbedActor).options(num_gpus=per_gpu, num_cpus=1)
                device = "cuda"
            else:
                if per_gpu > 0:
                    self.fallback = f"gpus_per_embedder = {per_gpu:g} but the cluster has {gpus:g} GPU(s)"
                    log.warning("%s: CPU actors", self.fallback)
                count = self.options.workers or max(1, int(resources.get("CPU", 1)))
                actor = ray.remote(EmbedActor).options(num_cpus=1)
                device = "cpu"
            self._actors = [actor.remote(self.model_arg, device, self.batch_size, self.gpu) for _ in range(count)]
            infos = ray.get([a.info.remote() for a in self._actors])
            self._dim = int(infos[0]["dim"])
            self.active_precision = str(infos[0]["precision"])
            self.precision_agreement = infos[0]["agreement"]
            self.device = str(infos[0]["device"])
            self._model = self._actors
        return self._model

    @property
    def dim(self) -> int:
        self._load()
        return self._dim

    @property
    def cache_key(self) -> str:
        """As the in-process embedder's: CPU actors compute the very same numbers."""
        self._load()
        return json.dumps([resolve_model(self.model_name), str(self.device), self.active_precision])

    def _encode_fresh(self, texts: list[str], *, show_progress: bool, desc: str) -> npt.NDArray[np.float32]:
        """The chunks the in-process embedder encodes one by one (``Embedder._encode_fresh``), spread over the
        actors: every model batch holds the same texts as in one process, so CPU actors give the same numbers."""
        from ray.util import ActorPool

        actors = self._load()
        started = time.perf_counter()
        step = max(self.batch_size * 8, 256) if show_progress else max(1, len(texts))
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        bar = progress_bar(total=len(texts), desc=f"{desc} on {len(actors)} ray actor(s)", unit="text",
                           enabled=self.show_progress and show_progress)
        parts = []
        try:
            for vectors in ActorPool(list(actors)).map(lambda a, chunk: a.encode.remote(chunk), chunks):
                parts.append(vectors)
                bar.update(len(vectors))
        finally:
            bar.close()
        self.texts += len(texts)
        self.seconds += time.perf_counter() - started
        return np.concatenate(parts) if parts else np.zeros((0, self._dim), dtype=np.float32)

    def describe(self) -> str:
        """The scan note: where re-embedding ran and how fast."""
        rate = self.texts / self.seconds if self.seconds > 0 else 0.0
        kind = "GPU" if self.gpu else "CPU"
        return (f"ray engine: re-embedded {self.texts:,} texts on {len(self._actors)} {kind} actor(s) "
                f"({self.device}, {self.active_precision}) in {self.seconds:.1f} s: {rate:,.0f} texts/s, "
                f"{rate / max(1, len(self._actors)):,.0f} per actor"
                + (f" ({self.fallback})" if self.fallback else ""))

    def shutdown(self) -> None:
        if self._actors:
            ray = require_ray()
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
            self._model = None
