"""Detection: slide a trained model's window over long recordings and write detection tables.

The recordings are planned into work units (:mod:`chirpkit.detection.plan`: a file, or a time shard
of a long one, with results identical to one pass) and run (:mod:`chirpkit.detection.units`) in this
process on decode threads ahead of the model (``engine="local"``), on a Dask cluster
(``engine="dask"``: a local cluster of worker processes, a scheduler address or a cluster object
such as ``dask_jobqueue.SLURMCluster``; each worker loads the model once), or as one shard of a
job array (``shard="I/N"``, no scheduler). Each unit leaves a part with the best few labels of
every window, so a rerun skips finished units and a changed threshold or top-k needs no new
inference. A window label becomes a detection when it is not a background class and reaches its
class threshold (``RUN/thresholds.json``) or ``min_score``; windows of one label merge into
events. A unit that cannot be decoded is retried when the failure may pass (``retries``), then
goes to ``errors.csv`` while the rest goes on; outputs that cannot be written (a full disk) stop
the job with an :class:`~chirpkit.errors.OutputError`, and the same command then resumes. Ctrl-C
and SIGTERM stop it within seconds with the finished units kept.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from chirpkit.conditioning import Denoise, steps_from_dicts
from chirpkit.config import DetectConfig
from chirpkit.detection.plan import (
    DETECTION_COLUMNS,
    MANIFEST_COLUMNS,
    Results,
    WorkUnit,
    failed_path,
    merge,
    part_path,
    part_top,
    plan_units,
    read_part,
    select,
    write_failure,
    write_part,
    write_plan,
)
from chirpkit.detection.units import sliding_windows
from chirpkit.errors import ChirpkitError, ConfigError, DataError, OutputError, RunError
from chirpkit.evaluation.thresholds import load_thresholds
from chirpkit.models.birdnet_species import resolve_species
from chirpkit.models.predict import Predictor, load_predictor
from chirpkit.sources import resolve_sources
from chirpkit.utils.engine import assign_shards, interruptible, keep, output_guard, parse_shard

__all__ = ["DETECTION_COLUMNS", "detect", "merge", "resolve_inputs", "sliding_windows"]

log = logging.getLogger("chirpkit")

ENGINES = ("local", "dask")


def resolve_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path | str]:
    """Expand files, folders (recursively, audio files only), glob patterns, URLs and
    ``@list.txt`` (one path per line) into a de-duplicated list (local files as paths, URLs as
    strings).

    Raises:
        MissingPathError: an input that is neither an existing path nor a matching pattern.
    """
    sources, _ = resolve_sources(inputs)
    return [s if "://" in s else Path(s) for s in sources]


def _load(run: str | os.PathLike[str], device: str, species: list[str] | None = None) -> Predictor:
    try:
        return load_predictor(run, device=device, species=species)
    except ChirpkitError:
        raise
    except Exception as exc:
        raise RunError(
            f"cannot load a model from {run}: {type(exc).__name__}: {str(exc)[:200]} (give a run folder, "
            "model.pt, model.onnx or model.ts written by chirpkit)"
        ) from exc


def _check_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(
            str(out_dir),
            f"--out {out_dir} is a file, not a folder: give a folder for the detection tables",
            errno.EEXIST,
        )


def detect(
    run: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    config: DetectConfig | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    engine: str = "local",
    scheduler: Any = None,
    shard: str | tuple[int, int] | None = None,
    retries: int = 2,
    species: str | os.PathLike[str] | Sequence[str] | None = None,
    lat: float | None = None,
    lon: float | None = None,
    week: int = -1,
) -> pd.DataFrame:
    """Run a trained model, or BirdNET itself, over recordings and write detection tables to ``out``.

    Args:
        run: a run folder, ``model.pt``, an export (``model.onnx`` / ``model.ts``), or
            ``"birdnet"``: BirdNET V2.4's own per-species scores, no training (as
            BirdNET-Analyzer's ``analyze``).
        inputs: files, folders (recursive), glob patterns, URLs (``s3://…``, ``gs://…``,
            ``memory://…``, read through fsspec) or ``@list.txt``.
        out: ``detections.csv`` (window rows ``file, start_s, end_s, label, score``; ``.parquet``
            too with ``formats``), ``events.csv`` (merged windows), ``raven/`` and ``audacity/``
            tables per recording (with ``formats``), ``errors.csv`` (units that failed, with the
            reason), ``manifest.csv`` (one line per work unit), ``plan.json``,
            ``detect_summary.json``, and the parts in ``.parts/``.
        config: :class:`chirpkit.config.DetectConfig` (hop, thresholds, top-k, formats, workers,
            shard length).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ... (with Dask, ``cuda`` gives each
            worker of a local cluster its own GPU).
        resume: reuse the parts of units finished by an earlier (possibly interrupted) run.
        engine: ``local`` (this process) or ``dask``.
        scheduler: for ``engine="dask"``: None (a local cluster of ``config.workers`` processes),
            ``tcp://HOST:8786``, a cluster object or a ``distributed.Client``.
        shard: ``"I/N"``: run only the I-th of N shards of the units into the shared ``out``; the
            shard that completes the job writes the tables (or run :func:`merge`).
        retries: further attempts of a unit whose failure may pass (not a decode error).
        species: BirdNET only: a species list file (one species a line) or names to detect.
        lat, lon, week: BirdNET only: keep the species its location model expects there in that
            week (1-48, four a month; -1: the whole year), as BirdNET-Analyzer's filter.

    Returns:
        The window detections (with ``shard`` while other shards are unfinished: this shard's).
    """
    cfg = config or DetectConfig()
    shard_of = _check_job(engine, retries, shard, resume)
    out_dir = Path(out)
    _check_out(out_dir)
    sources, problems = _find_sources(inputs)
    filtered = species is not None or lat is not None or lon is not None or week != -1
    chosen = resolve_species(species, lat=lat, lon=lon, week=week) if filtered else None
    if chosen:
        log.info("detect: %d species chosen (e.g. %s)", len(chosen), ", ".join(chosen[:3]))
    predictor = _load(run, device if engine == "local" else "cpu", chosen)
    spec = predictor.spec
    hop_s = cfg.hop_s if cfg.hop_s is not None else spec.window_s / 2
    # noise reduction estimates its profile per decoded block: only whole files give one pass's result
    denoise = any(isinstance(s, Denoise) for s in steps_from_dicts(spec.conditioning))
    shard_s = None if denoise else cfg.shard_s
    units, unreachable = plan_units(
        sources,
        model_identity=predictor.identity,
        sample_rate=spec.sample_rate,
        window_s=spec.window_s,
        hop_s=hop_s,
        block_s=cfg.block_s,
        shard_s=shard_s,
    )
    settings = _settings(run, predictor, cfg, hop_s, shard_s, shard_of)
    with output_guard(out_dir):
        (out_dir / ".parts").mkdir(parents=True, exist_ok=True)
    write_plan(out_dir, units, problems + unreachable, settings, strict=shard_of is not None)

    mine = units
    if shard_of is not None:
        owner = assign_shards([u.weight for u in units], shard_of[1])
        mine = [u for u, s in zip(units, owner, strict=True) if s == shard_of[0]]
    reused = _reusable(
        out_dir, mine, resume=resume, dense="scores" in cfg.formats, n_classes=spec.num_classes
    )
    todo = [u for u in mine if u.key not in reused]
    job = _Job(
        out_dir, todo, incremental_manifest=shard_of is None, reused=[u for u in mine if u.key in reused]
    )
    with interruptible():
        try:
            if engine == "dask":
                job.run_dask(run, predictor, hop_s, cfg, device, scheduler, retries, progress)
            else:
                job.run_local(predictor, hop_s, cfg, retries, progress)
        finally:
            job.close()
        run_info = job.run_info(engine, cfg, device, shard_of, len(reused))
        results = Results(out_dir)
        if all(results.finished(u) for u in units):
            table = merge(out_dir, reused=reused, run_info=run_info)
            _log_done(out_dir, table, run_info)
            return table
    return _shard_done(out_dir, units, mine, results, settings, shard_of)


def _check_job(
    engine: str, retries: int, shard: str | tuple[int, int] | None, resume: bool
) -> tuple[int, int] | None:
    """Check how the job is to run; the shard ``(I, N)`` this process runs, or None."""
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r} must be one of {list(ENGINES)}")
    if retries < 0:
        raise ConfigError(f"retries={retries} must be >= 0")
    shard_of = parse_shard(shard) if shard is not None else None
    if shard_of is not None and engine != "local":
        raise ConfigError(
            "--shard I/N runs one shard in this process; it does not combine with --engine dask"
        )
    if shard_of is not None and not resume:
        raise ConfigError("--fresh cannot be used with --shard (one shard would erase the others' work)")
    return shard_of


def _find_sources(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[dict[str, str]]]:
    """The recordings named by ``inputs`` and the inputs that could not be read; an error when
    nothing was found."""
    sources, problems = resolve_sources(inputs)
    if not sources:
        listed = "; ".join(f"{p['file']}: {p['reason']}" for p in problems[:3])
        raise DataError(
            f"no audio files found in {[str(i) for i in inputs]}"
            + (
                f" ({listed})"
                if listed
                else " (folders are searched for audio file endings: .wav, .flac, ...)"
            )
        )
    return sources, problems


def _settings(
    run: str | os.PathLike[str],
    predictor: Predictor,
    cfg: DetectConfig,
    hop_s: float,
    shard_s: float | None,
    shard_of: tuple[int, int] | None,
) -> dict[str, Any]:
    """The job's settings as plan.json records them (every shard of a job must agree on them)."""
    spec = predictor.spec
    thresholds = load_thresholds(run) if cfg.thresholds == "auto" else None
    if thresholds:
        log.info("per-class thresholds from the run (classes without one use min_score=%s)", cfg.min_score)
    return {
        "model": str(run),
        "model_kind": predictor.kind,
        "model_identity": predictor.identity,
        "sample_rate": spec.sample_rate,
        "window_s": spec.window_s,
        "hop_s": hop_s,
        "shard_s": shard_s,
        "min_score": cfg.min_score,
        "top_k": cfg.top_k,
        "thresholds": thresholds,
        "background": sorted(set(cfg.background_labels) | set(spec.background_labels)),
        "formats": list(cfg.formats),
        "classes": list(spec.class_names),
        "merge_gap_s": cfg.merge_gap_s,
        "shards": shard_of[1] if shard_of else None,
    }


def _reusable(out_dir: Path, mine: list[WorkUnit], *, resume: bool, dense: bool, n_classes: int) -> set[str]:
    """The keys of the units in ``mine`` that an earlier run finished; with ``resume`` off, none
    (and their failure records are cleared). With the score matrix asked for (``dense``), a part
    from a run without it (a few labels a window) is redone."""
    if not resume:
        for u in mine:
            failed_path(out_dir, u).unlink(missing_ok=True)
        return set()
    done = Results(out_dir).parts
    reused = {
        u.key for u in mine if u.key in done and (not dense or part_top(part_path(out_dir, u)) >= n_classes)
    }
    if reused:
        log.info(
            "detect: %d of %d work unit(s) already done in %s, %d to go",
            len(reused),
            len(mine),
            out_dir,
            len(mine) - len(reused),
        )
    return reused


def _shard_done(
    out_dir: Path,
    units: list[WorkUnit],
    mine: list[WorkUnit],
    results: Results,
    settings: dict[str, Any],
    shard_of: tuple[int, int] | None,
) -> pd.DataFrame:
    """After a shard whose job other shards have still to finish: say so, and return this shard's
    window detections."""
    left = sum(not results.finished(u) for u in units)
    log.info(
        "detect: shard %s done; %d work unit(s) of other shards still to go (the last shard to finish "
        "writes the tables; or run `chirpkit merge %s`)",
        f"{shard_of[0]}/{shard_of[1]}" if shard_of else "",
        left,
        out_dir,
    )
    tables = [
        select(read_part(part_path(out_dir, u))[0], settings).assign(file=u.file)[DETECTION_COLUMNS]
        for u in mine
        if u.key in results.parts
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=DETECTION_COLUMNS)


def _log_done(out_dir: Path, table: pd.DataFrame, info: dict[str, Any]) -> None:
    log.info(
        "detect: %d detection(s); %d work unit(s) processed, %d reused (%.0f s of audio in %.1f s, %s× "
        "real time); %s",
        len(table),
        info["processed"],
        info["reused"],
        info["audio_seconds_processed"],
        info["wall_seconds"],
        info["realtime_factor"],
        out_dir,
    )


class _Job:
    """Records unit results as they come (parts, failure markers, manifest lines, progress)."""

    def __init__(
        self, out_dir: Path, todo: list[WorkUnit], *, incremental_manifest: bool, reused: list[WorkUnit]
    ) -> None:
        self.out_dir = out_dir
        self.todo = todo
        self.audio_s = 0.0
        self.loads: dict[int, int] = {}
        self.cluster_start_s: float | None = None
        self.t0 = time.perf_counter()
        self.wall = 0.0
        self.bar: Any = None
        self._manifest: Any = None
        if incremental_manifest:
            # the manifest lists the reused units, then gains a line as each unit finishes (flushed),
            # so a killed run says how far it got; merge rewrites it whole at the end
            with output_guard(out_dir):
                path = out_dir / "manifest.csv"
                with path.open("w", newline="", encoding="utf-8") as fh:
                    rows = csv.writer(fh)
                    rows.writerow(MANIFEST_COLUMNS)
                    rows.writerows([u.file, u.start_s, u.end_s, "reused", u.key] for u in reused)
                self._manifest = path.open("a", newline="", encoding="utf-8")
        self._rows = csv.writer(self._manifest) if self._manifest else None
        self._planned_h = sum(u.audio_s for u in todo) / 3600

    def _line(self, unit: WorkUnit, status: str) -> None:
        if self._rows is not None:
            with output_guard(self.out_dir):
                self._rows.writerow(
                    [unit.file, unit.start_s, unit.end_s, status, unit.key if status == "done" else ""]
                )
                self._manifest.flush()

    def record(self, unit: WorkUnit, result: dict[str, Any], attempts: int = 1) -> None:
        if "cands" in result:
            write_part(self.out_dir, unit, result["cands"], result["stats"])
            self.audio_s += result["stats"]["audio_s"]
            self._line(unit, "done")
        else:
            write_failure(self.out_dir, unit, result["failure"], attempts)
            self._line(unit, "failed")
            log.warning(
                "skipped %s%s: %s",
                unit.file,
                f" from {unit.start_s:g} s" if unit.first else "",
                result["failure"],
            )
        if self.bar is not None:
            self.bar.update()
            rtf = self.audio_s / max(1e-9, time.perf_counter() - self.t0)
            self.bar.set_postfix(audio_h=f"{self.audio_s / 3600:.2f}/{self._planned_h:.2f}", rtf=f"{rtf:.0f}")

    def _open_bar(self, progress: bool, what: str) -> None:
        self.bar = tqdm(total=len(self.todo), desc=f"detect ({what})", unit="unit", disable=not progress)

    def run_local(
        self, predictor: Predictor, hop_s: float, cfg: DetectConfig, retries: int, progress: bool
    ) -> None:
        from chirpkit.detection.units import run_units

        self._open_bar(progress, "local")
        pending = self.todo
        for attempt in range(1, retries + 2):
            again: list[WorkUnit] = []

            def on_result(
                unit: WorkUnit, result: dict[str, Any], attempt: int = attempt, again: list[WorkUnit] = again
            ) -> None:
                if result.get("transient") and attempt <= retries:
                    again.append(unit)
                else:
                    self.record(unit, result, attempt)

            run_units(pending, predictor, hop_s, cfg, threads=cfg.workers, on_result=on_result)
            if not again:
                break
            log.info(
                "detect: retrying %d work unit(s) (attempt %d of %d)", len(again), attempt + 1, retries + 1
            )
            pending = again

    def run_dask(
        self,
        run: str | os.PathLike[str],
        predictor: Predictor,
        hop_s: float,
        cfg: DetectConfig,
        device: str,
        scheduler: Any,
        retries: int,
        progress: bool,
    ) -> None:
        from chirpkit.detection.units import _dask_unit, model_blob
        from chirpkit.utils.engine import dask_client, run_on_dask

        if not self.todo:
            return
        by_key = {u.key: u for u in self.todo}
        threads = max(1, (os.cpu_count() or 1) // cfg.workers) if scheduler is None else None
        with dask_client(scheduler, workers=cfg.workers) as client:
            self.cluster_start_s = time.perf_counter() - self.t0
            self._open_bar(progress, f"dask, {len(client.scheduler_info()['workers'])} workers")
            # a task, not scattered data: if the worker holding it dies, the scheduler computes it
            # again from the task itself (scattered data has no recipe, and every unit that needed
            # it was dropped with it: "already forgotten")
            blob = client.submit(
                keep,
                model_blob(run, predictor),
                key=f"model-{predictor.identity}",
                pure=False,
                retries=retries,
            )

            def on_result(key: str, result: dict[str, Any]) -> None:
                worker = result.pop("worker", None)
                if worker:
                    self.loads[worker["pid"]] = worker["loads"]
                self.record(by_key[key], result)

            def on_error(key: str, exc: BaseException) -> None:
                if isinstance(exc, OutputError):
                    raise exc
                name = type(exc).__name__
                reason = (
                    f"its Dask worker died while running it, too often ({exc})"
                    if name == "KilledWorker"
                    else f"failed on the cluster after {retries + 1} attempt(s): {name}: {exc}"
                )
                self.record(by_key[key], {"failure": reason}, retries + 1)

            tasks = [(u.key, (u.to_dict(), blob, hop_s, cfg, device, threads)) for u in self.todo]
            run_on_dask(client, _dask_unit, tasks, retries=retries, on_result=on_result, on_error=on_error)

    def close(self) -> None:
        self.wall = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.close()
        if self._manifest is not None:
            self._manifest.close()

    def run_info(
        self, engine: str, cfg: DetectConfig, device: str, shard: tuple[int, int] | None, reused: int
    ) -> dict[str, Any]:
        return {
            "processed": len(self.todo),
            "reused": reused,
            "audio_seconds_processed": round(self.audio_s, 2),
            "wall_seconds": round(self.wall, 3),
            "realtime_factor": round(self.audio_s / self.wall, 1)
            if self.wall > 0 and self.audio_s > 0
            else None,
            "engine": engine,
            "workers": cfg.workers,
            "device": str(device),
            "shard": f"{shard[0]}/{shard[1]}" if shard else None,
            "model_loads_per_worker": {str(k): v for k, v in sorted(self.loads.items())} or None,
            "cluster_start_seconds": None if self.cluster_start_s is None else round(self.cluster_start_s, 3),
            # where relative recording paths in the tables start from, and where the tables were
            # written: review finds the recordings from any folder, and after both were moved
            "paths": {"cwd": str(Path.cwd()), "out": str(self.out_dir.resolve())},
        }
