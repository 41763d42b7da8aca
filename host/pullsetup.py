"""Setting a board up for pull mode, over SSH, once (afterwards the controller never connects
to it): the current agent, its allowed signers, the object store's settings and the board's own
credentials (sent through the agent's upload folder; the agent keeps them owner-only in
STORE/pull/), then the resident agent with ``--pull-every S``, tagged with the board's
``python`` so later SSH sessions use it instead of replacing it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from ..device.trust import signer_line
from ..errors import Incompatible
from .deploy import BoardSession


@dataclass(frozen=True)
class PullSetup:
    source: str                 # the URL the board reaches the store at (s3://… or http(s)://…)
    endpoint: str | None = None
    cohort: str = "all"
    every: float = 60.0         # seconds between polls (agentd --pull-every)
    report_every: int = 1
    timeout: float = 15.0


def setup_pull(s: BoardSession, setup: PullSetup, signer_pubs: list[str],
               credentials: dict | None) -> dict:
    """Set the board of session S up (module docstring); what its agent said."""
    board = s.board
    st = s.state()
    if signer_pubs:
        s.trust([signer_line(p) for p in signer_pubs])
    args: list[object] = ["pull", "--source", setup.source, "--board", board.name,
                          "--cohort", setup.cohort, "--report-every", setup.report_every,
                          "--timeout", setup.timeout, "--save", "--save-only"]
    if setup.endpoint:
        args += ["--endpoint", setup.endpoint]
    if credentials is not None:
        if not st.incoming:
            raise Incompatible(board.name, "its agent names no upload folder",
                               hint="`edgedeploy push` installs the current agent")
        folder = f"{st.incoming}/creds.{secrets.token_hex(6)}"
        s.link.upload(folder, [("s3.json", json.dumps(credentials).encode())])
        args += ["--credentials", f"{folder}/s3.json"]
    saved = s.link.call(*args)
    started = s.link.call("agentd", "--detach", "--idle", 0, "--tag", board.python,
                          "--pull-every", setup.every)
    s.link.keep_resident()  # the session's end must not replace it with a plain one
    return {"board": board.name, "config": saved.get("config"), "source": saved.get("source"),
            "agentd": started}
