"""Reading `lasagna ... --progress jsonl` from the subprocess's stderr. Krita-free.

The stream's lines are documented in lasagna_cli/progress_stream.py: `progress`, `message`, and one final
`result` or `error`. Bytes arrive in arbitrary chunks (QProcess delivers what the pipe holds), so
`LineReader` keeps the unfinished tail; a line that isn't JSON (a crash's traceback) is kept as a message,
so the user still sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class Event:
    kind: str  # progress, message, result or error
    stage: str = ""
    step: int = 0
    total: Optional[int] = None
    seconds: float = 0.0
    eta: Optional[float] = None
    text: str = ""  # a message's text, an error's message
    exit_code: Optional[int] = None
    result: Any = None

    @property
    def final(self) -> bool:
        return self.kind in ("result", "error")


def parse_line(line: str) -> Optional[Event]:
    """One line of the stream as an Event; an empty line is None, a line that isn't the stream's a message."""
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return Event("message", text=line)
    if not isinstance(data, dict) or data.get("event") not in ("progress", "message", "result", "error"):
        return Event("message", text=line)
    return Event(
        kind=data["event"], stage=str(data.get("stage", "")), step=int(data.get("step") or 0), total=data.get("total"),
        seconds=float(data.get("seconds") or 0.0), eta=data.get("eta"),
        text=str(data.get("message", data.get("text", ""))), exit_code=data.get("exit_code"), result=data.get("result"),
    )


@dataclass
class LineReader:
    """Bytes in, Events out, across chunk boundaries (a UTF-8 character may be split between two chunks)."""

    _pending: bytes = b""
    events: List[Event] = field(default_factory=list)

    def feed(self, chunk: bytes) -> List[Event]:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        return self._parse(lines)

    def close(self) -> List[Event]:
        rest, self._pending = self._pending, b""
        return self._parse([rest])

    def _parse(self, lines: List[bytes]) -> List[Event]:
        new = [e for e in (parse_line(raw.decode("utf-8", "replace")) for raw in lines) if e is not None]
        self.events += new
        return new

    @property
    def final(self) -> Optional[Event]:
        return next((e for e in reversed(self.events) if e.final), None)


def outcome_message(reader: LineReader, exit_code: int) -> str:
    """The one line to show when a run ended with `exit_code` != 0: the CLI's own error message, else the last
    thing it wrote (a crash without a final line), else the bare exit code."""
    final = reader.final
    if final is not None and final.kind == "error" and final.text:
        return final.text
    messages = [e.text for e in reader.events if e.kind == "message"]
    return messages[-1] if messages else f"lasagna exited with code {exit_code}"


def describe(event: Event) -> str:
    """A progress line for people: 'distill 12/150, about 40 s left'."""
    text = f"{event.stage} {event.step}/{event.total}" if event.total else f"{event.stage} {event.step}"
    if event.eta is not None:
        text += f", about {event.eta:.0f} s left"
    return text


def result_layers(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The new layers a result line names (name, blend_mode, opacity, ...), bottom to top."""
    layers = result.get("layers") if isinstance(result, dict) else None
    if not isinstance(layers, list) or not layers:
        raise ValueError("lasagna's result names no layers")
    return layers
