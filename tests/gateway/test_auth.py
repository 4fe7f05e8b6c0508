"""The key digest memo: the same answer as parsing and hashing every time, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth import DigestMemo, bearer_token, hash_key
from tollway.errors import AuthenticationFailed

headers = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.builds(lambda t: "Bearer " + t, st.text(max_size=40)),
    st.builds(lambda t: "bearer  " + t + " ", st.text(alphabet="abc-_", max_size=10)),
)


def _direct(header: str | None) -> str | AuthenticationFailed:
    try:
        return hash_key(bearer_token(header))
    except AuthenticationFailed as exc:
        return exc


def _memo(memo: DigestMemo, header: str | None) -> str | AuthenticationFailed:
    try:
        return memo.digest(header)
    except AuthenticationFailed as exc:
        return exc


@given(st.lists(headers, max_size=30))
def test_the_memo_answers_as_parsing_and_hashing_does(seen: list[str | None]) -> None:
    memo = DigestMemo(max_entries=8)
    for header in seen + seen:  # each header twice: the second answer is remembered
        direct, remembered = _direct(header), _memo(memo, header)
        if isinstance(direct, AuthenticationFailed):
            assert isinstance(remembered, AuthenticationFailed)
            assert remembered.code == direct.code
        else:
            assert remembered == direct
        assert len(memo._digests) <= 8


def test_malformed_headers_are_refused_every_time_and_never_kept() -> None:
    memo = DigestMemo()
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            memo.digest("Basic abc")
        with pytest.raises(AuthenticationFailed):
            memo.digest(None)
    assert memo._digests == {}
    assert memo.digest("Bearer tw-x") == hash_key("tw-x")
    assert memo._digests == {"Bearer tw-x": hash_key("tw-x")}
