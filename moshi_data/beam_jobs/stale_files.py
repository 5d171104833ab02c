"""Deleting what an earlier or killed run left in a job's output folders, as a join in the pipeline.

The files this run wrote, as (folder, name), are joined by name with a listing of the folders taken
after every write; listed names nobody wrote (shards of an earlier, bigger run, temporaries of a
killed one) are deleted. No worker holds the list of written names. On a store that lists from a
name (local disk, S3: ``storage.lists_from_name``) no worker holds a folder's listing either: each
folder is listed as ``ranges`` name ranges in parallel (config ``stale_files.listing_ranges``), cut
at approximate quantiles of the names written there (a bounded combiner), each range streamed page
by page (``storage.iter_names``). On any other store (gs://, which Beam's FileSystems only match
whole) each folder is one range, listed whole by one worker, so it is listed once, not once per
range. Every name falls in exactly one range, so the removal stays exact whatever the cuts.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence

import apache_beam as beam

from moshi_data.pipeline import storage
from moshi_data.pipeline.config import ConfigError


def name_ranges(folder: str, cuts: Mapping[str, Sequence[str]]) -> list[tuple[str, Optional[str], Optional[str]]]:
    """(folder, after, upto) ranges that cover every name once: (None, c1], (c1, c2], ..., (ck, None),
    cut at the inner quantiles of the names written in ``folder`` (one range when none was)."""
    quantiles = list(cuts.get(folder, []))
    inner = sorted(set(quantiles[1:-1]))
    bounds: list[Optional[str]] = [None, *inner, None]
    return [(folder, after, upto) for after, upto in zip(bounds[:-1], bounds[1:])]


class ListRange(beam.DoFn):
    """(folder, after, upto) -> ((folder, name), None) for the files in that name range of the folder
    (temporaries of a killed run included), streamed; runs after every write of this run."""

    def __init__(self, output: str):
        self.output = output

    def process(self, name_range: tuple[str, Optional[str], Optional[str]]) -> Iterator:
        folder, after, upto = name_range
        for name in storage.iter_names(storage.join(self.output, folder), after, upto):
            yield (folder, name), None


class RemoveStale(beam.PTransform):
    """(folder, name) of every file written -> the count of files deleted from ``folders``, each listed
    as ``ranges`` name ranges (the job config's ``stale_files.listing_ranges``)."""

    def __init__(self, output: str, folders: Sequence[str], ranges: int):
        super().__init__()
        if isinstance(ranges, bool) or not isinstance(ranges, int) or ranges < 1:
            raise ConfigError(f"stale_files.listing_ranges: expected an integer >= 1, got {ranges!r}")
        self.output, self.folders, self.ranges = output, list(folders), ranges

    def expand(self, written):
        ranges = self.ranges if storage.lists_from_name(self.output) else 1
        # the cuts are a combine over every written name: the listing starts once all writes are done
        cuts = written | "CutNames" >> beam.ApproximateQuantiles.PerKey(ranges + 1)
        listed = (written.pipeline
                  | "Folders" >> beam.Create(self.folders)
                  | "Ranges" >> beam.FlatMap(name_ranges, beam.pvalue.AsDict(cuts))
                  | "SpreadRanges" >> beam.Reshuffle()
                  | "List" >> beam.ParDo(ListRange(self.output)))
        keyed = written | "KeyWritten" >> beam.Map(lambda folder_name: (folder_name, None))
        return ({"written": keyed, "listed": listed}
                | "JoinNames" >> beam.CoGroupByKey()
                | "Delete" >> beam.FlatMap(self._delete_stale)
                | "CountDeleted" >> beam.combiners.Count.Globally())

    def _delete_stale(self, item) -> Iterator:
        (folder, name), grouped = item
        if grouped["listed"] and not grouped["written"]:
            storage.delete([storage.join(self.output, folder, name)])
            yield name
