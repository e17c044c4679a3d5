"""limit/skip pagination that never loses a record, never stores one twice and never loops forever.

:func:`paginate` drives a ``fetch(skip, limit) -> RawPage`` callable (the client supplies one per
endpoint) and yields the *new* records of each page, de-duplicated by key. The rules (issue 2 §1,
reference §9 items 13-16):

* ``skip`` advances by the rows received (repeats included: that is where the server's cursor is).
* An empty page ends the listing, but one that comes before the announced total (with the
  cluster's ``size``, when known, also saying more exist) is asked for once more first, at the same
  ``skip``: a replica or a gateway answering empty for a moment must not cut a cluster short.
* With a total announced (``totalCount``), the listing ends when the distinct records fetched reach
  it. A short page is *not* the end while the total says more exist: servers cap pages below
  ``limit``. Totals can be understated, so reaching the total ends the listing at once only when a
  second, independent announcement agrees (``expected``: the cluster's ``size``) and the last page
  was shorter than the server's page size (``limit``, or the cap the server showed us); otherwise
  one more page is asked for, and an empty page (or the same page again: a server that ignores
  ``skip``) ends the listing. A total that turns out wrong (more records than announced) is ignored
  from then on and recorded as a mismatch.
* Without a total, a page shorter than the page size ends the listing when the cluster's ``size``
  agrees, or once the server's cap is known and the size does not say more exist; otherwise one
  more page is asked for (a server that caps its pages below ``limit`` without saying how many
  records exist would otherwise lose every record past its first page, and one that cuts them to
  a varying length every record past its second). A non-empty answer shows the cap; an empty one
  ends the listing.
* A total that moves between pages (200, then 199 or 201) means the catalog changed while it was
  listed: ``skip`` then steps over a record or serves one twice. It is recorded
  (``stats.total_changed``, set once the page that shows it is yielded), for the caller to list it
  again (the snapshot does, once) or keep it but not call it complete.
* A page that timed out (``fetch`` raises :class:`PageTooSlow`) is asked for again at the same
  ``skip`` with half the ``limit`` (reference §9 item 17), down to :data:`MIN_PAGE_SIZE`; the
  smaller size holds for the rest of the listing. ``fetch`` raises it only while the limit can
  still shrink; at the floor a timeout is retried and fails like any other.
* A page that adds nothing new *and* repeats the previous page means the server ignores ``skip``:
  ``on_repeat="stop"`` ends the listing (clusters: the records are all there), ``"fail"`` raises
  :class:`NoProgress` (columns: we cannot know what we missed), except while confirming an end,
  where it ends the listing too. Either way, it raises when the total (or, without one, ``expected``)
  says more records exist than arrived: a server that ignores ``skip`` *and* caps its pages would
  otherwise end a listing short, silently. Several pages in a row that add nothing new fail as
  well, and so does reaching ``max_pages``.
* ``null`` items of a page (``RawPage.nulls``, dropped by the caller) were served all the same: they
  count among the page's rows (``skip``, whether the page was full) and as received against the
  totals (a total that counts them is no shortfall), never as records.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

MAX_STALE_PAGES = 100  # pages in a row that add nothing new before we call it a loop
# Identical pages in a row before we conclude the server ignores ``skip``. One is enough for pages of
# several rows; a legitimate stream may repeat a single row back to back, so one-row pages get slack.
SAME_PAGE_LIMIT = 1
SAME_PAGE_LIMIT_SINGLE_ROW = 5
MIN_PAGE_SIZE = 50  # a page that times out is halved, down to this many rows


@dataclass
class RawPage(Generic[T]):
    """One response: its records (already validated), the total it announced, its envelope shape."""

    rows: Sequence[T]
    total: int | None = None
    shape: str | None = None
    nulls: int = 0  # ``null`` items the page held in place of records, dropped from ``rows``


MAX_CONFLICT_KEYS = 20  # keys sharing records named per listing (all are counted)


@dataclass
class PagingStats:
    """What paging one listing found."""

    pages: int = 0
    pages_with_records: int = 0  # pages that gave new records (yielded)
    first_page_rows: int | None = None  # the records of the first page that held any
    requests: int = 0
    rows_received: int = 0
    fetched: int = 0  # distinct records yielded
    duplicates: int = 0  # records received again (same key), not yielded twice
    # records sharing the key of one first seen on the same page, with other content: distinct
    # records (two catalog entries of one fullyQualifiedName); the first is kept
    conflicts: int = 0
    conflict_keys: list[Hashable] = field(default_factory=list)  # the first MAX_CONFLICT_KEYS of them
    nulls: int = 0  # ``null`` items served in place of records (dropped), on pages that were no repeat
    total: int | None = None  # the last total announced (see announced_total)
    echoed_totals_only: bool = True  # every total announced was its own page's count of rows
    total_wrong: bool = False  # the server returned more distinct records than it announced
    shapes: set[str] = field(default_factory=set)
    stopped_on_repeat: bool = False
    # with stopped_on_repeat: the repeated page held as many records as were asked for, so the
    # server may have honoured the limit and ignored skip (then more records exist than it gave)
    repeated_full_page: bool = False
    regrown: int | None = None  # the limit asked for at skip 0 to list such a server's records whole
    empty_reasked: int = 0  # empty pages before the total, asked for once more
    shrunk: int = 0  # pages that timed out and were asked for again with half the limit
    ended_short: bool = False  # ended on such a page, empty again: fewer records than announced
    first_total: int | None = None  # the first total a page announced beside records other than it
    # (the first total, a later different one): the catalog changed while it was listed, so records
    # added or removed meanwhile may be missing or stale (a total that echoes its page is no total)
    total_changed: tuple[int, int] | None = None

    @property
    def received(self) -> int:
        """Distinct records received: those yielded, those that shared a key with one of them on
        its page (``conflicts``), and the ``null`` items served in their place (``nulls``): the
        server counted them, so a total counting them is met; nothing of them is stored."""
        return self.fetched + self.conflicts + self.nulls

    def disagrees(self, announced: int | None) -> bool:
        """Whether a count announced (the total, the cluster's size) differs from what came: from
        the records fetched and from those received (records that shared a key on a page were
        served, so a count of either agrees)."""
        return announced is not None and announced not in (self.fetched, self.received)

    @property
    def announced_total(self) -> int | None:
        """The total to record: none when the listing took pages of records and every total only
        counted its own page's rows (a server echoing ``totalRowsCounter``: no total at all)."""
        return None if self.echoed_totals_only and self.pages_with_records > 1 else self.total

    @property
    def total_mismatch(self) -> bool:
        return self.disagrees(self.announced_total)


class PageTooSlow(Exception):
    """A page took too long (a read timeout, an answer still arriving at its deadline, or HTTP 504
    from a gateway in front of the tenant): ask for fewer rows. Raised by a ``fetch`` whose limit
    is above :data:`MIN_PAGE_SIZE`, on the first such attempt, instead of retrying it as it is."""

    def __init__(self, reason: str, attempts: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts  # the page's attempts so far, halvings before it included


def shrink(limit: int) -> int:
    """The page size to ask for after a page of ``limit`` rows timed out."""
    return max(MIN_PAGE_SIZE, limit // 2)


class NoProgress(Exception):
    """The server keeps answering without advancing (ignores ``skip``), or the page cap was hit."""


def announced_more(stats: PagingStats, expected: int | None) -> str | None:
    """What says more records exist than were fetched: the total (unless it proved wrong), else the
    independent announcement (``expected``); None when nothing does."""
    if stats.total is not None and not stats.total_wrong:
        announced, what = stats.total, "totalCount"
    elif expected is not None:
        announced, what = expected, "the cluster's size"
    else:
        return None
    if stats.received >= announced:
        return None
    return f"{what} says {announced:,}, but only {stats.received:,} arrived"


def paginate(
    fetch: Callable[[int, int], RawPage[T]],
    *,
    limit: int,
    key: Callable[[T], Hashable],
    stats: PagingStats,
    max_pages: int = 10_000,
    on_repeat: Literal["stop", "fail"] = "fail",
    expected: int | None = None,
    ceiling: Callable[[], int | None] | None = None,
    ignores_skip: Callable[[], bool] | None = None,
    content: Callable[[T], Hashable] | None = None,
    follows_key: Callable[[], bool] | None = None,
) -> Iterator[list[T]]:
    """Yield the new records of each page (pages that add nothing new are not yielded).

    ``expected`` is an independent announcement of the number of records (a cluster's ``size``).
    ``ceiling``, asked before each page, may lower the limit: a page size that other listings of
    the same tenant found too slow (see :class:`PageTooSlow`). ``ignores_skip``, called when the
    same page comes back for the next offset where that cannot be the end: True when the caller
    will ask for offsets another way from now on (``offset`` for ``skip``); the page is then asked
    for again. ``follows_key``, called where the same page again would end the listing: True when
    the caller will continue by a key the pages offer (the page is then asked for again).
    ``content(row)``, when given, tells a record received again from another record that
    shares its key on the same page (``conflicts``): both are left out, but a conflict counts as
    received against the totals, so a listing that served every record is not taken for one that
    ended short. A key already fetched on an earlier page is a repeat whatever it holds: paging's
    overlap may serve a record twice, updated in between, in place of one it skipped (a review
    found that counting those as received let a short listing pass for a complete one).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    seen: set[Hashable] = set()
    others: set[tuple[Hashable, Hashable]] = set()  # (key, content) of the records sharing a key
    skip = 0
    page_size = limit  # what a full page holds: ``limit``, or the cap the server showed us
    previous_keys: list[Hashable] | None = None
    stale = same = echoed = 0
    confirming = False  # the total was reached; this page only checks that nothing follows
    reasked = False  # this skip's empty page was asked for a second time
    repeat_reasked = False  # a page served again (the one before it) was asked for once more
    unconfirmed: int | None = None  # no total: the length of a short page not yet known to be the end
    while True:
        if stats.pages >= max_pages:
            raise NoProgress(f"gave up after {max_pages} pages (the page cap) at skip={skip}")
        lower = ceiling() if ceiling is not None else None
        if lower is not None and lower < limit:
            limit = lower
            page_size = min(page_size, limit)
        try:
            page = fetch(skip, limit)
        except PageTooSlow:
            if shrink(limit) == limit:  # a fetch must not raise it at the floor; never loop on it
                raise
            stats.requests += 1
            stats.shrunk += 1
            limit = shrink(limit)
            page_size = min(page_size, limit)
            continue
        stats.pages += 1
        stats.requests += 1
        if page.shape:
            stats.shapes.add(page.shape)
        announced = stats.total  # before this page: an empty answer may also say "0 in all"
        rows = list(page.rows)
        served = len(rows) + page.nulls  # where the server's cursor is, and how full the page was
        if page.total is not None:
            echo = page.total in (len(rows), served)
            stats.echoed_totals_only = stats.echoed_totals_only and echo
            # A total that only echoes its page (an empty page's 0, a page once the total proved
            # wrong) replaces no total already announced: a probe recorded 0 for 7 columns served.
            if not (echo and stats.total is not None and (stats.total_wrong or not served)):
                stats.total = page.total
        if not served:
            if page.total and stats.first_total is not None and page.total != stats.first_total:
                # the last, empty page announcing another total: a column deleted meanwhile moved
                # another one into a page already served (an empty page's total of 0 is an echo)
                stats.total_changed = (stats.first_total, page.total)
            totals = [t for t in (announced, stats.total) if t is not None and not stats.total_wrong]
            totals_say_more = any(stats.received < t for t in totals)
            # The cluster's size, when given, decides whether the page is asked for again: it says
            # more exist (and a total that says otherwise disagrees with it), or it agrees with what
            # arrived (an overstated total alone does not cost a request). Without a size, the totals.
            short = expected > stats.received if expected is not None else totals_say_more
            if short and not reasked:
                reasked = True
                stats.empty_reasked += 1
                continue  # the same skip once more
            # Empty twice: a shortfall when what was announced, a total or without one the size, says
            # more (a size above a total that agrees with the rows is a stale size, noted elsewhere).
            stats.ended_short = short and (totals_say_more or not totals)
            return
        reasked = False
        if page.total is not None and page.total not in (len(rows), served):  # (one echoing its page is none)
            if stats.first_total is None:
                stats.first_total = page.total
            elif page.total != stats.first_total:
                stats.total_changed = (stats.first_total, page.total)
        keys = [key(row) for row in rows]
        new: list[T] = []
        firsts: dict[Hashable, T] = {}  # the records first seen on this page, by key
        for row_key, row in zip(keys, rows, strict=True):
            if row_key in seen:
                first = firsts.get(row_key) if content is not None else None
                if first is None:  # first seen on an earlier page: a repeat, whatever it holds now
                    stats.duplicates += 1
                elif (found := content(row)) == content(first) or (row_key, found) in others:
                    stats.duplicates += 1  # this page's record of the key again, or its other one
                else:  # another record under the key, on the same page: counted as received
                    others.add((row_key, found))
                    stats.conflicts += 1
                    if len(stats.conflict_keys) < MAX_CONFLICT_KEYS:
                        stats.conflict_keys.append(row_key)
                continue
            seen.add(row_key)
            firsts[row_key] = row
            new.append(row)
        stats.rows_received += served
        stats.fetched += len(new)
        # (the nulls of a page served again are not counted twice; a page of nulls only is no repeat)
        if new or not keys or keys != previous_keys:
            stats.nulls += page.nulls
        if stats.first_page_rows is None:
            stats.first_page_rows = served
        if not new:
            same = same + 1 if keys and keys == previous_keys else 0
            echoed = echoed + len(keys) if same else 0
            if same == 1 and len(keys) > 1 and not repeat_reasked and not confirming:
                # The page before, served again: asked for once more at the same skip before skip is
                # said to be ignored (a probe: one page a lagging replica served twice made the next
                # request go by offset, which that tenant read as 0, and the cluster failed). Not
                # where only the end was being confirmed: a repeat there ends the listing.
                repeat_reasked = True
                stats.duplicates -= len(keys)  # paging's echo, not records listed twice
                echoed = 0
                continue
            if same >= (SAME_PAGE_LIMIT if len(keys) > 1 else SAME_PAGE_LIMIT_SINGLE_ROW):
                missing = announced_more(stats, expected)
                ends = (confirming or on_repeat == "stop") and not missing
                if ends and follows_key is not None and follows_key():
                    # where the repeat would end the listing, its pages offer a key to continue by: a
                    # server that sends everything at once offers none; one that pages by its key
                    # alone lost all but its first page, complete and without a word (a probe)
                    stats.duplicates -= echoed  # paging's echo, not records listed twice
                    same = echoed = 0
                    continue  # the same offset, asked by the key
                if ends:
                    # the server ignores skip; past the total (or for clusters) that is the end, and
                    # the same page served again is paging's echo, not records listed twice
                    stats.stopped_on_repeat = True
                    stats.repeated_full_page = served >= limit
                    stats.duplicates -= echoed
                    return
                if ignores_skip is not None and ignores_skip():
                    stats.duplicates -= echoed  # paging's echo, not records listed twice
                    same = echoed = 0
                    continue  # the same offset, asked the other way (the same page again: the end)
                stats.duplicates -= echoed  # paging's echo, not records listed twice
                raise NoProgress(
                    f"the server returned the same page again at skip={skip} (it ignores skip, or its "
                    "records repeat one key)" + (f"; {missing}" if missing else "")
                )
            stale += 1
            if stale >= MAX_STALE_PAGES:
                raise NoProgress(f"{stale} pages in a row added no new record (last at skip={skip})")
            previous_keys = keys
            skip += served
            continue  # repeats only: still confirming if we were
        stale = same = 0
        repeat_reasked = False  # progress: a later page served again is asked for once more too
        stats.pages_with_records += 1
        yield new
        previous_keys = keys
        skip += served
        confirming = False
        total = None if stats.total_wrong else stats.total
        if total is not None and stats.fetched > total:
            stats.total_wrong = True  # the total lied: from now on only an empty page ends the listing
            continue
        if total is not None:
            if stats.received < total:
                if served < page_size:
                    page_size = served  # the server caps pages below ``limit``
                continue
            if served < page_size and expected == total:
                return  # total reached on a short page, and the size agrees: the end
            confirming = True  # one more request: an understated total must not lose rows
            continue
        if stats.total is None:
            if unconfirmed is not None:  # the page after a short one came back: the server caps pages
                page_size = min(page_size, unconfirmed)
                unconfirmed = None
            if served < page_size:
                # (a server that cuts its pages to a varying length, by bytes say: 12 rows, then 6
                # under a cap of 12 taken for the end while the size said 25; a probe lost 7 of
                # every 25 columns and called the run complete)
                size_says_more = expected is not None and stats.received < expected
                if stats.received == expected or (page_size < limit and not size_says_more):
                    return  # short, and the size agrees or the server's cap is known: the end
                # Shorter than asked, with nothing announced: the end, or a server that caps its
                # pages below ``limit`` (and would lose every row past the first page). One more
                # request tells: an empty page ends the listing, and so does the same one again
                # unless the cluster's size says more exist (see announced_more).
                unconfirmed = served
                confirming = True
