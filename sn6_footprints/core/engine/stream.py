"""Windows read ahead, batches through the model, blended rows handed on: the stages overlap.

Reader threads (one dataset handle each) read, convert and normalise windows into bounded
queues while the model runs; tiles go through the model in batches that may span rows of
tiles; a row of pixels is final once no later tile covers it, and finished rows go to a sink
thread that feeds the consumers (the vectoriser, a probability raster). Every queue is
bounded, so memory follows the tile size and the raster's width, never its height.

Only the calling thread runs the model and talks to the feedback (progress, cancel): a
cancel or an error anywhere stops every thread before the call returns.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.windows import Window

from ..feedback import Feedback
from ..reading.model_windows import ModelWindows
from ..reading.plan import InputPlan
from ..settings import ModelSettings
from .predictor import Predictor, normalise, pad_to_multiple
from .tiling import TilingOptions, blend_weights, plan_tile_rows

_POLL_S = 0.1  # how often a waiting thread looks whether the run was stopped


@dataclass
class BlendedRows:
    """Final rows of the model grid: the blended probability (0 where invalid) and validity."""

    top: int
    probability: np.ndarray  # float32 (h, grid width): the footprint channel
    valid: np.ndarray        # bool (h, grid width)
    channels: np.ndarray | None = None  # float32 (outputs, h, grid width) of a several-output model

    @property
    def window(self) -> Window:
        height, width = self.probability.shape
        return Window(0, self.top, width, height)


@dataclass
class EngineStats:
    """What the run did and where its time went. Stages overlap, so their busy seconds may add
    up to more than the wall time; ``wait_s`` is the model's time spent waiting for reads."""

    tiles: int = 0
    skipped: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


class _Stopped(Exception):
    """The run was stopped while this thread waited."""


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event, failed: Callable[[], None] = lambda: None):
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            failed()


_END = object()


class _Readers:
    """Reader threads: thread ``i`` reads windows i, i+n, ... into its own queue, so taking
    from the queues in turn gives the windows in order."""

    def __init__(self, raster_path, plan: InputPlan, settings: ModelSettings, windows: list[Window],
                 threads: int, depth: int, stop: threading.Event, stats: EngineStats):
        self.stop, self.stats = stop, stats
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.queues = [queue.Queue(maxsize=max(1, depth)) for _ in range(threads)]
        self.threads = [threading.Thread(target=self._read, name=f"sn6-reader-{i}", daemon=True,
                                         args=(raster_path, plan, settings, windows[i::threads], self.queues[i]))
                        for i in range(threads)]
        self.count = len(windows)
        for thread in self.threads:
            thread.start()

    def _read(self, raster_path, plan, settings, windows, out: queue.Queue) -> None:
        try:
            with rasterio.open(raster_path) as dataset:
                reader = ModelWindows(dataset, plan)
                for window in windows:
                    started = time.perf_counter()
                    data, valid = reader.read(window)
                    tile = pad_to_multiple(normalise(data, settings)) if valid.any() else None
                    with self.lock:
                        self.stats.seconds["read"] += time.perf_counter() - started
                    _put(out, (window, tile, valid), self.stop)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.errors.append(exc)
            self.stop.set()

    def _raise_error(self) -> None:
        if self.errors:
            raise self.errors[0]

    def __iter__(self):
        for index in range(self.count):
            started = time.perf_counter()
            try:
                item = _get(self.queues[index % len(self.queues)], self.stop, self._raise_error)
            except _Stopped:
                self._raise_error()
                raise
            self.stats.seconds["wait"] += time.perf_counter() - started
            yield item

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)


class _Sink:
    """One thread that hands finished rows to the consumers in order (a consumer is a name and
    a callable; its busy seconds are counted under that name)."""

    def __init__(self, consumers: list[tuple[str, Callable[[BlendedRows], None]]], depth: int,
                 stop: threading.Event, stats: EngineStats):
        self.consumers, self.stop, self.stats = consumers, stop, stats
        self.errors: list[BaseException] = []
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.thread = threading.Thread(target=self._run, name="sn6-sink", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                rows = _get(self.queue, self.stop)
                if rows is _END:
                    return
                for name, consume in self.consumers:
                    started = time.perf_counter()
                    consume(rows)
                    self.stats.seconds[name] += time.perf_counter() - started
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.errors.append(exc)
            self.stop.set()

    def raise_error(self) -> None:
        if self.errors:
            raise self.errors[0]

    def put(self, rows) -> None:
        try:
            _put(self.queue, rows, self.stop)
        except _Stopped:
            self.raise_error()
            raise

    def finish(self) -> None:
        """Wait until every row was consumed; a consumer's error is raised here."""
        self.put(_END)
        while self.thread.is_alive():
            self.thread.join(timeout=_POLL_S)
        self.raise_error()


class _BlendBuffer:
    """Weighted sums of the tiles' probabilities (every output channel) over the rows not yet final."""

    def __init__(self, width: int, overlap_px: int, channels: int = 1):
        self.top, self.width, self.overlap_px, self.channels = 0, width, overlap_px, channels
        self.weighted = np.zeros((channels, 0, width), np.float32)
        self.weights = np.zeros((0, width), np.float32)
        self.valid = np.zeros((0, width), bool)

    def add(self, window: Window, probability: np.ndarray, valid: np.ndarray) -> None:
        bottom = window.row_off + window.height - self.top
        grow = bottom - self.weights.shape[0]
        if grow > 0:
            self.weighted = np.concatenate([self.weighted, np.zeros((self.channels, grow, self.width), np.float32)],
                                           axis=1)
            self.weights = np.vstack([self.weights, np.zeros((grow, self.width), np.float32)])
            self.valid = np.vstack([self.valid, np.zeros((grow, self.width), bool)])
        w = blend_weights(window.height, window.width, self.overlap_px)
        rs = slice(window.row_off - self.top, bottom)
        cs = slice(window.col_off, window.col_off + window.width)
        self.weighted[:, rs, cs] += w * probability.reshape(self.channels, window.height, window.width)
        self.weights[rs, cs] += w
        self.valid[rs, cs] |= valid

    def take(self, bottom: int) -> BlendedRows:
        """The rows above ``bottom``, which no later tile covers, blended; the buffer moves down."""
        n = bottom - self.top
        valid = self.valid[:n].copy()
        blended = self.weighted[:, :n] / np.maximum(self.weights[:n], 1e-12)  # one new float32 array
        blended[:, ~valid] = 0.0
        rows = BlendedRows(self.top, blended[0], valid, blended if self.channels > 1 else None)
        # copies of the rows kept (the overlap), so the taken rows' memory goes now, not when the
        # next row of tiles replaces these arrays: a wide raster's buffer is never held twice
        self.weighted, self.weights, self.valid = (self.weighted[:, n:].copy(), self.weights[n:].copy(),
                                                   self.valid[n:].copy())
        self.top = bottom
        return rows


# Finished rows go to the consumers in strips of at most this many rows, whatever the tile:
# what the vectoriser and the watershed hold at once (a few arrays of strip x width) then
# follows the raster's width only. 512 keeps the strips of 512 px tiles (448 rows) as they were.
MAX_STRIP_ROWS = 512


def strip_bottoms(top: int, bottom: int) -> list[int]:
    """Bottoms of the fewest near-equal strips of at most MAX_STRIP_ROWS rows from top to bottom."""
    count = max(1, -(-(bottom - top) // MAX_STRIP_ROWS))
    return [top + round((bottom - top) * (i + 1) / count) for i in range(count)]


def _batches(tiles: Iterator, batch_size: int):
    """Lists of up to ``batch_size`` (window, tile or None, valid), in order."""
    batch = []
    for item in tiles:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _predict(predictor: Predictor, batch: list, stats: EngineStats) -> list[np.ndarray]:
    """Probabilities of one batch; a tile without a single valid pixel (a nodata swath, a
    mosaic's empty corner) is not run: its pixels are nodata in every tile that covers them,
    so its probability (0) cannot change the output."""
    run = [tile for _, tile, _ in batch if tile is not None]
    stats.skipped += len(batch) - len(run)
    started = time.perf_counter()
    if not run:
        outputs = []
    elif any(t.shape != run[0].shape for t in run):  # tiles of other sizes: one by one
        outputs = [predictor(t[None])[0] for t in run]
    else:
        outputs = list(predictor(np.stack(run)))
    stats.seconds["model"] += time.perf_counter() - started
    results = iter(outputs)
    empty = (predictor.channels,) if predictor.channels > 1 else ()
    return [next(results)[..., :w.height, :w.width] if tile is not None
            else np.zeros(empty + (w.height, w.width), np.float32) for w, tile, _ in batch]


def run_engine(raster_path, predictor: Predictor, settings: ModelSettings, plan: InputPlan,
               consumers: list[tuple[str, Callable[[BlendedRows], None]]], options: TilingOptions | None = None,
               feedback: Feedback | None = None, reader_threads: int = 1) -> EngineStats:
    """Blend the model's probability over the plan's model grid and hand every finished block
    of rows, top to bottom, to each consumer (on the sink thread). Progress 0-100 follows the
    tiles; the feedback is asked to cancel before every batch."""
    feedback = feedback or Feedback()
    grid = plan.grid
    options = (options or TilingOptions()).fitted(grid.width, grid.height)
    options.check()
    overlap = options.effective_overlap_px
    rows = plan_tile_rows(grid.width, grid.height, options.tile_size_px, overlap)
    windows = [window for row in rows for window in row]
    # the pixel row above which everything is final once the tiles of row r are blended
    final_bottom = [rows[r + 1][0].row_off if r + 1 < len(rows) else grid.height for r in range(len(rows))]
    last_of_row = np.cumsum([len(row) for row in rows]) - 1
    stats = EngineStats(tiles=len(windows))
    stop = threading.Event()
    depth = max(2, options.batch_size)
    buffer = _BlendBuffer(grid.width, overlap, predictor.channels)
    started = time.perf_counter()
    readers = sink = None
    try:  # threads start inside: a cancel (a signal) arriving at any point stops them all
        readers = _Readers(raster_path, plan, settings, windows, max(1, reader_threads), depth, stop, stats)
        sink = _Sink(consumers, 2, stop, stats)
        done, row = 0, 0
        for batch in _batches(iter(readers), options.batch_size):
            feedback.check_cancelled()
            probabilities = _predict(predictor, batch, stats)
            t0 = time.perf_counter()
            for (window, _, valid), probability in zip(batch, probabilities):
                buffer.add(window, probability, valid)
                if done == last_of_row[row]:
                    for bottom in strip_bottoms(buffer.top, final_bottom[row]):
                        sink.put(buffer.take(bottom))
                    row += 1
                done += 1
                feedback.set_progress(100.0 * done / len(windows))  # per tile, as before batching
            stats.seconds["blend"] += time.perf_counter() - t0
            sink.raise_error()
        sink.finish()
    except _Stopped:  # another thread failed and stopped the run: its error, not the stop
        sink.raise_error()
        readers._raise_error()
        raise
    finally:
        stop.set()
        if readers is not None:
            readers.join()
        if sink is not None:
            sink.thread.join(timeout=5)
    stats.seconds["engine"] = time.perf_counter() - started
    return stats
