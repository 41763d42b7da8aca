"""Shared-memory regions between an app and the serve endpoint (Linux, Unix socket only), in the
spirit of Triton's system shared-memory extension, without names in /dev/shm.

The client makes an anonymous file (``memfd_create``), sizes it, seals it against shrinking
(``F_SEAL_SHRINK``: the server's mapping can never lose pages under it, so no SIGBUS) and maps
it. It passes the descriptor with SCM_RIGHTS on the line of a ``shm_register`` request::

    → {"op": "shm_register", "region": "r0", "size": 1048576}      + SCM_RIGHTS [fd]
    ← {"ok": true, "kind": "shm_register", "region": "r0", "size": 1048576}
    → {"op": "shm_unregister", "region": "r0"}

A region belongs to its connection (gone when it closes). Inputs then name a slice of it
instead of carrying bytes: ``{"dtype", "shape", "shm": "r0", "offset": 0, "nbytes": N}``; a
predict may ask for its outputs there with ``"output_shm": {"region": "r0", "offset": K,
"nbytes": M}`` and gets ``{"dtype", "shape", "shm", "offset", "nbytes"}`` back for each output
that fits (64-byte aligned, in order; an output that doesn't fit comes as a binary frame).
Refused: a descriptor that is not a regular file, unsealed (shrinkable), smaller than ``size``;
more than ``MAX_REGIONS`` per connection or ``MAX_TOTAL`` bytes of them together (the budget
is 4 regions of the largest size, shared by up to 16); slices outside the region. Stdlib + numpy.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .tensors import count, parse_dtype, parse_nbytes, parse_shape

MAX_REGIONS = 16
MAX_SIZE = 1 << 32
MAX_TOTAL = 1 << 34     # all of one connection's regions together (16 GiB, 4 of MAX_SIZE)
ALIGN = 64


@dataclass
class Region:
    name: str
    size: int
    mm: mmap.mmap

    def view(self, offset: int, nbytes: int, where: str) -> memoryview:
        if type(offset) is not int or offset < 0 or offset + nbytes > self.size:
            raise InputError(f"{where}: bytes {offset} … {offset}+{nbytes} are outside "
                             f"region {self.name!r} ({self.size} bytes)")
        return memoryview(self.mm)[offset:offset + nbytes]


class Regions:
    """The regions one connection registered (server side)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Region] = {}
        # requests validated against these regions (serve.Prepared, by their line without
        # the id); forgotten whenever a region comes or goes, before any mapping is closed
        self.prepared: dict[bytes, object] = {}

    def register(self, name: object, size: object, fd: int | None) -> Region:
        self.prepared.clear()
        try:
            if not isinstance(name, str) or not 0 < len(name) <= 64:
                raise InputError("shm_register needs \"region\": a name of 1 … 64 characters")
            if type(size) is not int or not 0 < size <= MAX_SIZE:
                raise InputError(f"shm_register: \"size\" must be an integer 1 … {MAX_SIZE}")
            if fd is None:
                raise InputError("shm_register: no file descriptor came with the request",
                                 hint="pass a sealed memfd with SCM_RIGHTS on the same "
                                      "sendmsg as the request line (Unix socket only)")
            if name in self.by_name:
                raise InputError(f"shm_register: region {name!r} exists; unregister it first")
            if len(self.by_name) >= MAX_REGIONS:
                raise InputError(f"shm_register: at most {MAX_REGIONS} regions per connection")
            held = sum(r.size for r in self.by_name.values())
            if held + size > MAX_TOTAL:
                raise InputError(f"shm_register: at most {MAX_TOTAL} bytes of regions per "
                                 f"connection ({held} held)",
                                 hint="shm_unregister a region first")
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InputError("shm_register: the descriptor is not a regular file (memfd)")
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            except OSError:
                seals = 0
            if not seals & fcntl.F_SEAL_SHRINK:
                raise InputError("shm_register: the memfd is not sealed against shrinking",
                                 hint="fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) before passing it")
            if st.st_size < size:
                raise InputError(f"shm_register: the file holds {st.st_size} bytes, "
                                 f"less than size {size}")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            if fd is not None:
                os.close(fd)  # the mapping keeps the memory; the descriptor isn't needed
        region = Region(name, size, mm)
        self.by_name[name] = region
        return region

    def unregister(self, name: object) -> None:
        self.prepared.clear()
        region = self.by_name.pop(name, None) if isinstance(name, str) else None
        if region is None:
            raise InputError(f"shm_unregister: no region {str(name)[:64]!r}")
        _close(region.mm)

    def get(self, name: object, where: str) -> Region:
        region = self.by_name.get(name) if isinstance(name, str) else None
        if region is None:
            raise InputError(f"{where}: no shared-memory region {str(name)[:64]!r} on this "
                             f"connection", hint="shm_register it first")
        return region

    def input_array(self, h: dict, where: str) -> np.ndarray:
        """The array an input header names in a region (a view: set_tensor copies it)."""
        dtype, shape = parse_dtype(h.get("dtype"), where), parse_shape(h.get("shape"), where)
        nbytes = parse_nbytes(h.get("nbytes"), where)
        if nbytes != count(shape) * dtype.itemsize:
            raise InputError(f"{where}: nbytes {nbytes}; shape {list(shape)} of {dtype} needs "
                             f"{count(shape) * dtype.itemsize}")
        view = self.get(h.get("shm"), where).view(h.get("offset", 0), nbytes, where)
        return np.frombuffer(view, dtype=dtype).reshape(shape)

    def place_outputs(self, spec: object, outs: list[np.ndarray]) -> list[dict | None]:
        """Copy each output into the slice SPEC names while it fits; a header per output
        placed (None: send it as bytes)."""
        if not isinstance(spec, dict):
            raise InputError("predict: \"output_shm\" is {\"region\", \"offset\", \"nbytes\"}")
        region = self.get(spec.get("region"), "output_shm")
        start = spec.get("offset", 0)
        size = parse_nbytes(spec.get("nbytes"), "output_shm")
        region.view(start, size, "output_shm")  # validates the slice
        at, end = start, start + size
        placed: list[dict | None] = []
        for o in outs:
            o = np.ascontiguousarray(o)
            at = -(-at // ALIGN) * ALIGN
            if at + o.nbytes > end:
                placed.append(None)
                continue
            region.mm[at:at + o.nbytes] = o.data.cast("B") if o.nbytes else b""
            placed.append({"dtype": str(o.dtype), "shape": list(o.shape), "shm": region.name,
                           "offset": at, "nbytes": o.nbytes})
            at += o.nbytes
        return placed

    def close(self) -> None:
        self.prepared.clear()
        for region in self.by_name.values():
            _close(region.mm)
        self.by_name.clear()


def _close(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:  # a view is still alive somewhere: the GC unmaps it later
        pass


class ClientRegion:
    """The client's side: a sealed memfd of SIZE bytes, mapped."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self.fd = os.memfd_create(f"edgedeploy-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, size)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
            self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self.fd)
            raise

    def write(self, offset: int, a: np.ndarray) -> dict:
        a = np.ascontiguousarray(a)
        self.mm[offset:offset + a.nbytes] = a.data.cast("B") if a.nbytes else b""
        return {"dtype": str(a.dtype), "shape": list(a.shape), "shm": self.name,
                "offset": offset, "nbytes": a.nbytes}

    def read(self, h: dict) -> np.ndarray:
        off, n = h["offset"], h["nbytes"]
        return np.frombuffer(self.mm, dtype=np.dtype(h["dtype"]), count=n // np.dtype(
            h["dtype"]).itemsize, offset=off).reshape(h["shape"]).copy()

    def close(self) -> None:
        _close(self.mm)
        try:
            os.close(self.fd)
        except OSError:
            pass
