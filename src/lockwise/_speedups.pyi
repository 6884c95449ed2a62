"""Types of the optional C accelerator (see _speedups.c)."""

from typing import Any, Callable, Optional

class LockBase:
    _inner: Any
    _owner: Any
    _site: Any
    _acq: Optional[tuple[Any, int]]
    _serial: Any
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *args: object) -> None: ...

class RLockBase(LockBase):
    _count: int

def setup(local: Any, new_state: Callable[[], Any], settings: Any,
          note: Callable[[Any, Any], Optional[BaseException]], internal_files: set[str],
          thread_state_type: type, a_lock: Any, order_module: Any = ...) -> None: ...
