"""Mutations of HTTP heads for the differential fuzz tests (C against Python): a seed with up
to four tokens inserted, bytes deleted or overwritten."""

from __future__ import annotations

from hypothesis import strategies as st


def mutations(seeds: list[bytes], tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["insert", "delete", "replace"]))
            token = draw(st.sampled_from(tokens) | st.binary(min_size=1, max_size=3))
            if op == "insert":
                data[at:at] = token
            elif op == "delete":
                data[at:at + draw(st.integers(1, 8))] = b""
            else:
                data[at:at + len(token)] = token
        return bytes(data)
    return mutated()
