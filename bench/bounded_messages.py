"""Benchmark-only change to the local FnApiRunner (Beam 2.77): stage inputs reach SDK workers in
bounded data messages, as a production runner streams them, instead of one message per worker.

Why (measured, see docs/text-corpus.md "Scale"): for a stage fed by a GroupByKey the FnApiRunner
encodes a worker's whole share of the stage input into ONE byte string (``GroupingBuffer.partition``:
one output stream per worker), and ``BundleManager._send_input_to_worker`` writes every piece into
one data stream without ``maybe_flush``, so it leaves as one gRPC message on close. The SDK worker
then holds that message and a bytes copy of it (``element.data``) for the whole bundle: worker
memory grows with (stage input / workers), whatever the job does. On the 100k-document bench input
that was one 199 MB message per worker for the dedup join (99 MB at 50k). Dataflow's shuffle
reader streams a bundle in bounded pieces, so this growth is the local runner's, not the job's.

``install(piece_bytes)`` (called in the launcher, before the pipeline runs) changes two things and
nothing else: a worker's share of a grouped stage input is cut into pieces of about ``piece_bytes``
at key boundaries (a key's values stay one element, so each key's state is exactly what the job
asks for), and each piece is sent as its own data message, by a thread while the bundle runs.
Elements, bundles, keys and their order per worker are unchanged.

Message size: ~1 MB (``PIECE_BYTES``), the data-plane buffer of Beam's Java runner side
(``BeamFnDataOutboundAggregator.DEFAULT_BUFFER_LIMIT_BYTES = 1_000_000``, the code that portable
runners use to send bundle data to an SDK harness), not the FnApiRunner's 10 MB flush threshold.
It matters because the SDK worker's receive queue holds 5 messages whatever their size
(``data_plane._DEFAULT_RECEIVE_QUEUE_MAX_ELEMENTS``; 100 MB at most): when the worker is slower than
the sender, which is the case once a worker's share exceeds a few messages, it buffers 5 messages
of unprocessed input. With the earlier 8 MB pieces flushed at the 10 MB threshold (16-18 MB
messages) that was 85-91 MB in each worker at 800k documents and nothing at 50k (a worker's whole
share of the dedup join is ~25 MB there): measured 2026-12-01, docs/text-corpus.md "Scale". With
~1 MB messages it is ~5 MB at any size. Fails loudly when Beam's internals are not the expected ones.
"""
from __future__ import annotations

PIECE_BYTES = 1_000_000  # see the module docstring


def install(piece_bytes: int = PIECE_BYTES) -> None:
    import threading

    import apache_beam
    from apache_beam.coders.coder_impl import create_OutputStream
    from apache_beam.runners.portability.fn_api_runner import execution, fn_runner
    from apache_beam.transforms.window import GlobalWindow, GlobalWindows
    from apache_beam.utils import windowed_value

    if apache_beam.__version__ != "2.77.0":
        raise RuntimeError(f"bench/bounded_messages.py patches Beam 2.77.0 internals, found {apache_beam.__version__}")
    grouping, manager = execution.GroupingBuffer, fn_runner.BundleManager
    original_partition = grouping.partition

    def partition(self, n: int):
        if self._grouped_output or not self._windowing.is_default():
            return original_partition(self, n)  # already cut, or windowed (Reshuffle): as Beam does it
        window = GlobalWindows.windowed_value(None, timestamp=GlobalWindow().max_timestamp(), pane_info=windowed_value.PaneInfo(
            is_first=True, is_last=True, timing=windowed_value.PaneInfoTiming.ON_TIME, index=0,
            nonspeculative_index=0)).with_value
        coder, key_coder = self._post_grouped_coder.get_impl(), self._key_coder.get_impl()
        pieces: list[list[bytes]] = [[] for _ in range(n)]
        streams = [create_OutputStream() for _ in range(n)]
        for index, (encoded_key, values) in enumerate(self._table.items()):  # keys dealt round robin, as Beam does
            stream = streams[index % n]
            coder.encode_to_stream(window((key_coder.decode(encoded_key), values)), stream, True)
            if stream.size() >= piece_bytes:
                pieces[index % n].append(stream.get())
                streams[index % n] = create_OutputStream()
        for worker, stream in enumerate(streams):
            if stream.size():
                pieces[worker].append(stream.get())
        self._grouped_output = pieces
        self._table.clear()
        return pieces

    def send_input_to_worker(self, process_bundle_id, read_transform_id, byte_streams) -> None:
        """Stream the pieces from a thread: Beam sends a bundle's input before it starts the bundle and
        reads its outputs, which only works when the input is one message (a queue takes one element
        of any size); bounded messages need the sender to run alongside the bundle."""
        data_out = self._worker_handler.data_conn.output_stream(process_bundle_id, read_transform_id)

        def send() -> None:
            try:
                for byte_stream in byte_streams or []:
                    data_out.write(byte_stream)
                    data_out.flush()  # one data message per piece
            finally:
                data_out.close()

        threading.Thread(target=send, name=f"send-{read_transform_id}", daemon=True).start()

    for owner, name in ((grouping, "partition"), (manager, "_send_input_to_worker")):
        if not callable(getattr(owner, name, None)):
            raise RuntimeError(f"Beam internals changed: {owner.__name__}.{name} is missing")
    grouping.partition = partition
    manager._send_input_to_worker = send_input_to_worker
