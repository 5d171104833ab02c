"""``moshi-data show-sample SHARD.tar --key KEY --output picture.png [--wav stereo.wav]``.

Draws one sample so a person can check the alignment: both streams' waveforms, the diarization turns,
the words at their times and the text tokens on the 12.5 Hz frames (SentencePiece pieces when the
tokenizer is found, else ids). ``--wav`` also writes the two streams as a stereo WAV (left = main).
"""
from __future__ import annotations

import sys
from pathlib import Path

from moshi_data.pipeline.audio.inspect import (InspectError, find_sample, png_marks, render_sample_png, sample_turns,
                                               stereo_wav, tokenizer_pieces)


def default_tokenizer() -> str | None:
    """The tokenizer the audio config names (the one the job used unless overridden)."""
    from moshi_data.pipeline.audio.recording import resolve_repo_path
    from moshi_data.pipeline.config import load_config

    path = resolve_repo_path(load_config("audio_shards")["text"]["tokenizer"])
    return str(path) if path.exists() else None


def write_picture(shard: str, key: str, output: str, wav: str | None = None, tokenizer: str | None = None) -> dict:
    """Write the PNG (and WAV); returns the mark counts drawn."""
    sample = find_sample(shard, key)
    turns, source = sample_turns(sample, shard)
    png = render_sample_png(sample, turns, source, tokenizer_pieces(tokenizer))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_bytes(png)
    if wav:
        Path(wav).parent.mkdir(parents=True, exist_ok=True)
        Path(wav).write_bytes(stereo_wav(sample))
    return png_marks(png)


def main(argv: list[str] | None = None) -> int:
    from moshi_data.pipeline.command import command_parser, run_command

    parser = command_parser(__name__, __doc__)
    parser.add_argument("input", help="a shard .tar (or an audio output folder)")
    parser.add_argument("--key", required=True, help="the sample's __key__ (`moshi-data inspect` lists them)")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--wav", help="also write the two streams as a stereo WAV here")
    parser.add_argument("--tokenizer", help="SentencePiece model to show token pieces (default: the audio config's)")
    return run_command(parser, argv, _main)


def _main(args) -> int:
    from moshi_data.pipeline.command import UserError

    try:
        if not Path(args.input).exists():
            raise InspectError(f"{args.input}: no such file or folder")
        marks = write_picture(args.input, args.key, args.output, args.wav, args.tokenizer or default_tokenizer())
    except (InspectError, ValueError) as error:
        raise UserError(str(error)) from error
    print(f"wrote {args.output} ({marks['words']} words, {marks['tokens']} text tokens, {marks['turns']} turns)"
          + (f" and {args.wav}" if args.wav else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
