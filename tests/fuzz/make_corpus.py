#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets (tests/fuzz/corpus/<target>/seed-*).

Seeds are small hand-made files in each format, over the 16 genes of fuzz_common.hpp (no data
from ../shared/data is copied). The safetensors seeds add the small fixtures of tests/fixtures.
Files named finding-* are inputs that broke a parser before the hardening of issue 12 (its probe);
files named crash-* are inputs a fuzzing run found (tests/fuzz/run_fuzzers.sh). Keep both: CI
replays every corpus file (ctest -L fuzz).
Inputs that fault inside libhdf5 (which celltx cannot prevent) are kept apart in
tests/fuzz/libhdf5_findings/ and not replayed. The .h5ad seeds (corpus/h5ad) are HDF5 files written by celltx's own writer, so a C++ program makes
them: tests/fuzz/make_h5ad_corpus.cpp (its header says how to build and run it).
Usage: python3 tests/fuzz/make_corpus.py   (from the repository root; rewrites only seed-* files)
"""
import gzip
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")
FIXTURES = os.path.join(ROOT, "..", "fixtures")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    # ---- safetensors
    f32 = lambda *v: struct.pack("<%df" % len(v), *v)
    put("safetensors", "linear", safetensors([("bias", "F32", [3], f32(0.1, -0.2, 0.3)),
                                               ("weight", "F32", [3, 4], f32(*[0.5 * i for i in range(12)]))],
                                              {"format": "pt"}))
    put("safetensors", "dtypes", safetensors([
        ("a", "F64", [2], struct.pack("<2d", 1.5, -2.0)), ("b", "F16", [2], struct.pack("<2H", 0x3c00, 0x7c00)),
        ("c", "BF16", [1], struct.pack("<H", 0x3f80)), ("d", "I64", [2], struct.pack("<2q", -3, 2**40)),
        ("e", "BOOL", [3], bytes([0, 1, 2])), ("f", "U8", [2], bytes([7, 255])), ("g", "I32", [0, 5], b""),
        ("h", "U64", [1], struct.pack("<Q", 2**63)), ("i", "I8", [1], bytes([0x80])), ("j", "U16", [1], struct.pack("<H", 65535)),
        ("k", "I16", [1], struct.pack("<h", -7)), ("l", "U32", [1], struct.pack("<I", 4000000000))]))
    put("safetensors", "empty_header", safetensors([]))
    put("safetensors", "scalar", safetensors([("s", "F32", [], f32(3.25))], {"a": "b", "c": "d"}))
    for name in ["st_linear.safetensors", "st_checkpoint.safetensors", "st_dtypes_extra.safetensors", "st_bad_gap.safetensors",
                 "st_bad_overlap.safetensors", "st_bad_metadata.safetensors", "st_bad_duplicate.safetensors"]:
        with open(os.path.join(FIXTURES, name), "rb") as f:
            put("safetensors", "fixture_" + name.replace(".safetensors", ""), f.read())

    # ---- STRING actions (plain and gzip)
    header = "item_id_a\titem_id_b\tmode\taction\tis_directional\ta_is_acting\tscore\n"
    rows = ("4932.YAL001C\t4932.YBR158W\tbinding\t\tf\tf\t900\n"
            "4932.YBR158W\t4932.YAL001C\tbinding\t\tf\tf\t900\n"
            "4932.YLR131C\t4932.YGL035C\tactivation\tactivation\tt\tt\t400\n"
            "4932.YGL035C\t4932.YLR131C\tactivation\tactivation\tt\tf\t400\n"
            "4932.YER111C\t4932.YNOTAGENE\treaction\t\tf\tf\t150\n"
            "4932.YLR035C\t4932.YML060W\tcatalysis\tcatalysis\tt\tt\t1000\n"
            "4932.YGL094C\t4932.YDL154W\texpression\texpression\tt\tt\t0\n")
    put("string_actions", "plain", header + rows)
    put("string_actions", "gzip", gzip.compress((header + rows).encode(), mtime=0))
    put("string_actions", "two_members", gzip.compress(header.encode(), mtime=0) + gzip.compress(rows.encode(), mtime=0))
    put("string_actions", "header_only", header)
    put("string_actions", "crlf", (header + rows).replace("\n", "\r\n"))
    put("string_actions_gz", "plain", header + rows)
    put("string_actions_gz", "header_only", header)

    # ---- YEASTRACT
    put("yeastract", "rows", '"","TF","TG"\n"1","Ace2p","AMN1"\n"2","Ace2p","TFC3"\n"3","Mig1p","VPS8"\n'
                             '"4","Swi4p","NOTAGENE"\n"5","Ace2p,x","""q"""\n6,Yap5p,BCY1\n')
    put("yeastract", "header_only", '"","TF","TG"\n')

    # ---- GO-slim
    put("go_slim", "rows", "YAL001C\tTFC3\tS000000001\tP\tDNA repair\tGO:0006281\tORF|Verified\n"
                           "YAL002W\tVPS8\tS000000002\tP\tDNA repair\tGO:0006281\tORF|Verified\n"
                           "YBR158W\tAMN1\tS000000003\tF\tDNA binding\tGO:0003677\tORF|Verified\n"
                           "YLR131C\tACE2\tS000000004\tC\tnucleus\tGO:0005634\tORF|Verified\n"
                           "CPX-1\t\tS000000005\tC\tnucleus\tGO:0005634\tcomplex\n"
                           "YGL035C\tMIG1\tS000000006\tP\tother\t\tORF|Verified\n"
                           "YGL035C\tMIG1\tS000000006\tP\tDNA repair\tGO:0006281\tORF|Verified\n")

    # ---- DCell pair files and gene lists
    put("gi_labels", "train", "2 YLR035C YML060W 0.0447\n2 YGL094C YDL154W -0.0014\n2 YAL001C YAL002W 0.25\n\n"
                              "3 YKL067W YEL018W YOR346W -0.1\n1 YIR018W 0.5\n")
    put("gi_labels", "query", "YLR035C YML060W -2.0\nYGL094C YDL154W -2.0\nYAL001C YNOTAGENE -2.0\n")
    put("gi_labels", "genes", "YAL001C\nYBR158W\nACE2\nYAL001C\nYNOTAGENE\n")

    # ---- DCell topology
    put("dcell_topology", "dag", "ROOT: GO:0000001 6\nGENES: YAL001C YAL002W \nTERMS: GO:0000002 GO:0000003 \n"
                                 "ROOT: GO:0000002 3\nGENES: YBR158W \nTERMS: GO:0000004 \n"
                                 "ROOT: GO:0000003 3\nGENES: YLR131C \nTERMS: GO:0000004 \n"
                                 "ROOT: GO:0000004 2\nGENES: YGL035C YER111C \nTERMS: \n")
    put("dcell_topology", "single", "ROOT: GO:0006281 1\nGENES: YLR035C\nTERMS:\n")

    # ---- gene universe: SGD table and GFF3
    put("gene_universe", "table", "systematic_name\tstandard_name\tsgd_id\torf_classification\tchrom\tstart\tend\tstrand\n"
                                  "YAL001C\tTFC3\tS000000001\tVerified\tchrI\t147596\t151168\t-\n"
                                  "YAL002W\tVPS8\tS000000002\tVerified\tchrI\t143709\t147533\t+\n"
                                  "YAL003W\t\tS000000003\tDubious\tchrI\t142176\t143162\t+\n")
    put("gene_universe", "gff", "##gff-version 3\n#comment\n"
                                "chrI\tSGD\tgene\t1\t9\t.\t+\t.\tID=YAL001C;Name=YAL001C;gene=TFC3;Alias=TFC3,FUN24,transcription%20factor\n"
                                "chrI\tSGD\tmRNA\t1\t9\t.\t+\t.\tID=YAL001C_mRNA;Parent=YAL001C\n"
                                "chrI\tSGD\tgene\t20\t90\t.\t-\t.\tID=YAL002W;gene=VPS8;Alias=VPS8,FUN24,Pol%CE%B7\n"
                                "##FASTA\n>chrI\nACGT\n")


def findings():
    """Inputs that broke a parser before the hardening (issue 12's probe): replayed by CI."""
    def put_finding(target, name, data):
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "finding-" + name), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())

    def st(header):
        h = header.encode() if isinstance(header, str) else header
        return struct.pack("<Q", len(h)) + h

    put_finding("safetensors", "deep-nesting",  # a 160 KB valid header: the error path printed the dtype recursively
                st('{"w":{"dtype":' + "[" * 80000 + "]" * 80000 + ',"shape":[1],"data_offsets":[0,4]}}') + b"\0" * 4)
    put_finding("safetensors", "nul-then-garbage", st(b"{}\0\0garbage{{{"))  # accepted as {}
    put_finding("safetensors", "byte-order-mark", st(b'\xef\xbb\xbf{}'))  # accepted
    put_finding("safetensors", "long-dtype", st('{"w":{"dtype":"' + "X" * 20000 + '","shape":[1],"data_offsets":[0,4]}}') + b"\0" * 4)
    put_finding("safetensors", "huge-header-length", struct.pack("<Q", 2**63) + b"{}")
    put_finding("gi_labels", "count-overflow", "18446744073709551615\n")  # std::length_error
    put_finding("gi_labels", "conflicting-labels", "2 YLR035C YML060W 0.1\n2 YML060W YLR035C 0.2\n")  # accepted
    put_finding("gi_labels", "nul-in-name", b"YAL001C\nYAL\x00001C\n")
    put_finding("gi_labels", "invalid-utf8", b"YAL001C\nYAL\xff01C\n")
    put_finding("gi_labels", "empty", "")  # read as 0 records
    put_finding("go_slim", "empty", "")
    put_finding("string_actions", "gzip-trailing-garbage",
                gzip.compress(b"item_id_a\titem_id_b\tmode\taction\tis_directional\ta_is_acting\tscore\n", mtime=0) + b"garbage")
    put_finding("string_actions", "gzip-long-line", gzip.compress(b"x" * 2000000, mtime=0))  # no line-length limit
    put_finding("dcell_topology", "cycle", "ROOT: GO:0000001 1\nGENES: YAL001C\nTERMS: GO:0000001\n")


if __name__ == "__main__":
    main()
    findings()
