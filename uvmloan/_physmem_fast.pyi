# Stub of the C extension uvmloan._physmem_fast (cext/physmem_fast.c).

from collections.abc import Callable, Iterable

class Fast:
    def __init__(
        self,
        address: int,
        keep: object,
        copy_page: Callable[[int, int], None],
        copy_pages: Callable[[Iterable[int], Iterable[int]], None],
    ) -> None: ...
    def copy_page(self, src: int, dst: int) -> None: ...
    def copy_pages(self, srcs: Iterable[int], dsts: Iterable[int]) -> None: ...
    def invalidate(self) -> None: ...
