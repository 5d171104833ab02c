"""Deleting what an earlier or killed run left in a job's output folders, as a join in the pipeline.

The files this run wrote, as (folder, name), are joined by name with a listing of the folders taken
after every write; listed names nobody wrote (shards of an earlier, bigger run, temporaries of a
killed one) are deleted. No single worker holds the list of written names.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import apache_beam as beam

from moshi_data.pipeline import storage


class ListFolder(beam.DoFn):
    """Folder -> ((folder, name), None) for the files in it (temporaries of a killed run included);
    runs after ``written_count`` is known, i.e. after every write of this run."""

    def __init__(self, output: str):
        self.output = output

    def process(self, folder: str, written_count: int) -> Iterator:
        for path in storage.list_folder(storage.join(self.output, folder)):
            yield (folder, path.rstrip("/").rsplit("/", 1)[-1]), None


class RemoveStale(beam.PTransform):
    """(folder, name) of every file written -> the count of files deleted from ``folders``."""

    def __init__(self, output: str, folders: Sequence[str]):
        super().__init__()
        self.output, self.folders = output, list(folders)

    def expand(self, written):
        count = written | "CountWritten" >> beam.combiners.Count.Globally()
        listed = (written.pipeline
                  | "Folders" >> beam.Create(self.folders)
                  | "List" >> beam.ParDo(ListFolder(self.output), beam.pvalue.AsSingleton(count)))
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
