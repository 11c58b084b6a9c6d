"""Web-crawled caption sets: Conceptual Captions (TSV + downloaded images, or an img2dataset output
folder) and SBU Captions (parallel URL and caption files) (FORMATS.md)."""

from __future__ import annotations

import hashlib
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.minicorpus import scenes
from pipelines.minicorpus.common import Tally, tar_bytes, write_bytes, write_lines, write_text
from schemas.records import Reason

CC_TSV = "Train_GCC-training.tsv"
CC_PER_SCALE = 16
I2D_SHARDS = 2
I2D_PER_SHARD_PER_SCALE = 8
SBU_URLS = "SBU_captioned_photo_dataset_urls.txt"
SBU_CAPTIONS = "SBU_captioned_photo_dataset_captions.txt"
SBU_PER_SCALE = 12

_HOSTS = ("i.pinimg.com/736x", "www.picturesof.example.com/photos", "media.gettyimages.example.com/photos",
          "c8.alamy.example.com/comp", "thumbs.dreamstime.example.com/z")


def _url(rng: random.Random) -> str:
    return f"http://{rng.choice(_HOSTS)}/{rng.getrandbits(32):08x}/{rng.getrandbits(48):012x}.jpg"


def _cc_caption(rng: random.Random, scene: scenes.Scene) -> str:
    return rng.choice(scenes.caption_variants(scene))  # lower case, no final period, like CC3M


def write_cc(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """Headerless ``caption<TAB>url`` lines; row N's image (0-based) is ``images/{N:08d}.jpg``."""
    rows: list = [("good", scenes.sample_scene(rng)) for _ in range(CC_PER_SCALE * scale)]
    for planted in ("malformed", "non_utf8", "empty", "missing"):
        rows.insert(rng.randrange(1, len(rows)), (planted, scenes.sample_scene(rng)))
    lines: list[bytes | str] = []
    for row, (what, scene) in enumerate(rows):
        caption, url, where = _cc_caption(rng, scene), _url(rng), f"{CC_TSV}:{row + 1}"
        if what == "malformed":
            lines.append(f"{caption} {url}")
            tally.reject(Reason.MALFORMED, where, "no tab between caption and url")
        elif what == "non_utf8":
            lines.append(f"{caption} near a caf\xe9\t{url}".encode("latin-1"))
            tally.reject(Reason.NON_UTF8, where, "a Latin-1 byte in the caption")
        elif what == "empty":
            lines.append(f"\t{url}")
            tally.reject(Reason.EMPTY_TEXT, where, "an empty caption")
        else:
            lines.append(f"{caption}\t{url}")
            if what == "missing":
                tally.reject(Reason.MISSING_IMAGE, f"images/{row:08d}.jpg", "the download of this row failed")
            else:
                write_bytes(os.path.join(root, "images", f"{row:08d}.jpg"), scenes.jpeg(scene))
                tally.sample()
    write_lines(os.path.join(root, CC_TSV), lines)


I2D_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("url", pa.string()),
    ("caption", pa.string()),
    ("status", pa.string()),
    ("error_message", pa.string()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("original_width", pa.int64()),
    ("original_height", pa.int64()),
    ("exif", pa.string()),
    ("sha256", pa.string()),
])
_ERRORS = ("HTTP Error 404: Not Found", "<urlopen error [Errno -2] Name or service not known>",
           "The read operation timed out", "HTTP Error 403: Forbidden")


def write_img2dataset(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """img2dataset ``--output_format webdataset`` output: ``NNNNN.tar`` (``KEY.jpg``, ``KEY.json``,
    ``KEY.txt`` per successful download), ``NNNNN.parquet`` (one row per URL) and ``NNNNN_stats.json``."""
    for shard in range(I2D_SHARDS):
        kinds = ["success"] * (I2D_PER_SHARD_PER_SCALE * scale)
        for _ in range(2):
            kinds.insert(rng.randrange(len(kinds) + 1), "failed")
        if shard == 1:
            kinds.insert(rng.randrange(1, len(kinds)), "no_image")
        rows, members = [], []
        tar_name = f"{shard:05d}.tar"
        for index, kind in enumerate(kinds):
            key = f"{shard:05d}{index:04d}"
            scene = scenes.sample_scene(rng)
            caption, url = _cc_caption(rng, scene), _url(rng)
            if kind == "failed":
                error = rng.choice(_ERRORS)
                rows.append({"key": key, "url": url, "caption": caption, "status": "failed_to_download",
                             "error_message": error, "width": None, "height": None, "original_width": None,
                             "original_height": None, "exif": None, "sha256": None})
                tally.reject(Reason.FAILED_DOWNLOAD, f"{shard:05d}.parquet", f"key {key}: {error}")
                continue
            data = scenes.jpeg(scene)
            row = {"key": key, "url": url, "caption": caption, "status": "success", "error_message": None,
                   "width": scene.width, "height": scene.height, "original_width": scene.width * 2,
                   "original_height": scene.height * 2, "exif": "{}", "sha256": hashlib.sha256(data).hexdigest()}
            rows.append(row)
            meta = {"url": url, "caption": caption, "key": key, "status": "success", "error_message": None,
                    "width": row["width"], "height": row["height"], "original_width": row["original_width"],
                    "original_height": row["original_height"], "exif": "{}", "sha256": row["sha256"]}
            if kind == "no_image":
                tally.reject(Reason.MISSING_IMAGE, tar_name, f"success row {key} has no {key}.jpg member")
            else:
                members.append((f"{key}.jpg", data))
                tally.sample()
            members.append((f"{key}.json", json.dumps(meta, indent=4).encode()))
            members.append((f"{key}.txt", caption.encode()))
        write_bytes(os.path.join(root, tar_name), tar_bytes(members, mode=0o444))
        table = pa.Table.from_pylist(rows, schema=I2D_SCHEMA)
        os.makedirs(root, exist_ok=True)
        pq.write_table(table, os.path.join(root, f"{shard:05d}.parquet"))
        successes = sum(1 for r in rows if r["status"] == "success")
        status: dict[str, int] = {"success": successes}
        for r in rows:
            if r["error_message"]:
                status[r["error_message"]] = status.get(r["error_message"], 0) + 1
        stats = {"count": len(rows), "successes": successes, "failed_to_download": len(rows) - successes,
                 "failed_to_resize": 0, "duration": 1.5 + shard, "start_time": 1500000000.0 + shard,
                 "end_time": 1500000001.5 + 2 * shard, "status_dict": status}
        write_text(os.path.join(root, f"{shard:05d}_stats.json"), json.dumps(stats, indent=4))


def _flickr_url(rng: random.Random) -> str:
    return f"http://static.flickr.com/{rng.randint(1000, 9999)}/{rng.getrandbits(32)}_{rng.getrandbits(40):010x}.jpg"


def _sbu_caption(rng: random.Random, scene: scenes.Scene) -> str:
    text = rng.choice(scenes.caption_variants(scene))
    return text[0].upper() + text[1:]  # "A red ball on the grass" (SBU: sentence case, no period)


def write_sbu(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """Line i of the URL file is the photo of line i of the caption file; one URL too many at the end."""
    rows: list = [("good", scenes.sample_scene(rng)) for _ in range(SBU_PER_SCALE * scale)]
    for planted in ("non_utf8", "empty", "missing"):
        rows.insert(rng.randrange(1, len(rows)), (planted, scenes.sample_scene(rng)))
    urls: list[str] = []
    captions: list[bytes | str] = []
    for row, (what, scene) in enumerate(rows):
        urls.append(_flickr_url(rng))
        caption, where = _sbu_caption(rng, scene), f"{SBU_CAPTIONS}:{row + 1}"
        if what == "non_utf8":
            captions.append(f"{caption} by the caf\xe9".encode("latin-1"))
            tally.reject(Reason.NON_UTF8, where, "a Latin-1 byte in the caption")
        elif what == "empty":
            captions.append("")
            tally.reject(Reason.EMPTY_TEXT, where, "an empty caption line")
        else:
            captions.append(caption)
            if what == "missing":
                tally.reject(Reason.MISSING_IMAGE, f"images/{row:08d}.jpg", "the download of this row failed")
            else:
                write_bytes(os.path.join(root, "images", f"{row:08d}.jpg"), scenes.jpeg(scene))
                tally.sample()
    urls.append(_flickr_url(rng))
    tally.reject(Reason.MALFORMED, f"{SBU_URLS}:{len(urls)}", "a URL line without a caption line")
    write_lines(os.path.join(root, SBU_URLS), urls)
    write_lines(os.path.join(root, SBU_CAPTIONS), captions)
