"""Port pairs: PortAllocator order and skipping rules, bind_pair/open_media_socket."""

from __future__ import annotations

import _socket
import errno
import random
import socket

import pytest

from rtpp.media.ports import PortAllocator, PortsExhausted, SocketPair, bind_pair, open_media_socket

HOST = "127.0.0.1"


def record_bind(bound: list[int]):
    """A binder that binds nothing: it records the port and hands back an empty pair."""

    def bind(port: int) -> SocketPair:
        bound.append(port)
        return SocketPair(port, None, None)  # type: ignore[arg-type]

    return bind


def busy_bind(busy: set[int], err: int = errno.EADDRINUSE):
    def bind(port: int) -> SocketPair:
        if port in busy:
            raise OSError(err, "busy")
        return SocketPair(port, None, None)  # type: ignore[arg-type]

    return bind


def allocate_all(alloc: PortAllocator) -> list[int]:
    ports = []
    bind = record_bind([])
    for _ in range(alloc.size):
        ports.append(alloc.allocate(bind).port)
    return ports


def free_pairs(count: int) -> tuple[int, list[socket.socket]]:
    """`count` consecutive free even/odd port pairs on HOST, held open by the caller."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, 0))
            base = probe.getsockname()[1] & ~1
        if base + 2 * count > 65535:
            continue
        held = []
        try:
            for port in range(base, base + 2 * count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind((HOST, port))
        except OSError:
            for s in held:
                s.close()
            continue
        return base, held
    pytest.skip("no free consecutive UDP ports on 127.0.0.1")


def pair_on_free_ports(tos: int = 0) -> tuple[int, SocketPair]:
    """A pair of ports just found free, and the SocketPair bind_pair binds on it."""
    base, held = free_pairs(1)
    for s in held:
        s.close()
    return base, bind_pair(socket.AF_INET, HOST, tos)(base)


# PortAllocator


def test_table_holds_only_even_ports_within_the_bounds():
    alloc = PortAllocator(35000, 35010, sequential=True)
    assert alloc.ports == [35000, 35002, 35004, 35006, 35008, 35010]
    assert alloc.size == 6


def test_shuffled_table_holds_the_same_even_ports():
    alloc = PortAllocator(35000, 35998)
    assert sorted(alloc.ports) == list(range(35000, 35999, 2))
    assert all(p % 2 == 0 for p in alloc.ports)


def test_sequential_allocation_starts_at_the_minimum_and_ascends():
    alloc = PortAllocator(40000, 40008, sequential=True)
    assert allocate_all(alloc) == [40000, 40002, 40004, 40006, 40008]


def test_sequential_allocation_wraps_around_after_the_maximum():
    alloc = PortAllocator(40000, 40004, sequential=True)
    bind = record_bind([])
    assert [alloc.allocate(bind).port for _ in range(3)] == [40000, 40002, 40004]
    alloc.release(40000)
    alloc.release(40002)
    assert alloc.allocate(bind).port == 40000
    assert alloc.allocate(bind).port == 40002


def test_shuffled_allocation_hands_out_a_permutation_of_the_range():
    alloc = PortAllocator(36000, 36398, rng=random.Random(7))
    ports = allocate_all(alloc)
    assert sorted(ports) == list(range(36000, 36399, 2))
    assert ports != sorted(ports)
    assert sorted(alloc.ports) == sorted(ports)


def test_shuffled_table_is_reshuffled_as_it_is_used():
    alloc = PortAllocator(36000, 36398, rng=random.Random(7))
    first_lap = allocate_all(alloc)
    for port in first_lap:
        alloc.release(port)
    second_lap = allocate_all(alloc)
    assert sorted(second_lap) == sorted(first_lap)
    assert second_lap != first_lap


def test_shuffled_order_depends_on_the_random_source():
    a = PortAllocator(36000, 36398, rng=random.Random(1))
    b = PortAllocator(36000, 36398, rng=random.Random(2))
    assert a.ports != b.ports
    assert sorted(a.ports) == sorted(b.ports)


def test_released_port_is_not_reused_at_once():
    alloc = PortAllocator(40000, 40008, sequential=True)
    bind = record_bind([])
    first = alloc.allocate(bind).port
    alloc.release(first)
    assert alloc.allocate(bind).port == 40002
    assert alloc.allocate(bind).port == 40004


def test_released_port_is_not_reused_at_once_in_shuffled_order():
    alloc = PortAllocator(40000, 40198, rng=random.Random(3))
    bind = record_bind([])
    first = alloc.allocate(bind).port
    alloc.release(first)
    following = [alloc.allocate(bind).port for _ in range(alloc.size // 2)]
    assert first not in following
    later = [alloc.allocate(bind).port for _ in range(alloc.size - 1 - alloc.size // 2)]
    assert first in later + [alloc.allocate(bind).port]


def test_ports_in_use_are_skipped():
    alloc = PortAllocator(40000, 40004, sequential=True)
    bind = record_bind([])
    assert allocate_all(alloc) == [40000, 40002, 40004]
    alloc.release(40002)
    assert alloc.allocate(bind).port == 40002


def test_busy_port_is_skipped_and_round_robin_continues_after_the_bound_one():
    alloc = PortAllocator(40000, 40008, sequential=True)
    bind = busy_bind({40000, 40002})
    assert alloc.allocate(bind).port == 40004
    assert alloc.allocate(bind).port == 40006


def test_permission_denied_counts_as_busy():
    alloc = PortAllocator(40000, 40004, sequential=True)
    assert alloc.allocate(busy_bind({40000}, errno.EACCES)).port == 40002


def test_other_bind_errors_fail_the_allocation_without_consuming_a_port():
    alloc = PortAllocator(40000, 40004, sequential=True)
    with pytest.raises(OSError) as info:
        alloc.allocate(busy_bind({40000}, errno.EADDRNOTAVAIL))
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert alloc.in_use == set()
    assert alloc.allocate(record_bind([])).port == 40000


def test_exhaustion_raises_ports_exhausted():
    alloc = PortAllocator(40000, 40004, sequential=True)
    allocate_all(alloc)
    with pytest.raises(PortsExhausted):
        alloc.allocate(record_bind([]))


def test_all_ports_busy_raises_ports_exhausted():
    alloc = PortAllocator(40000, 40004, sequential=True)
    with pytest.raises(PortsExhausted):
        alloc.allocate(busy_bind({40000, 40002, 40004}))
    assert alloc.in_use == set()


def test_exhaustion_ends_after_a_release():
    alloc = PortAllocator(40000, 40004, sequential=True)
    allocate_all(alloc)
    alloc.release(40004)
    assert alloc.allocate(record_bind([])).port == 40004


def test_single_pair_range_works():
    alloc = PortAllocator(40000, 40000)
    bind = record_bind([])
    assert alloc.size == 1
    assert alloc.allocate(bind).port == 40000
    with pytest.raises(PortsExhausted):
        alloc.allocate(bind)
    alloc.release(40000)
    assert alloc.allocate(bind).port == 40000


def test_single_free_pair_is_found_whatever_the_position():
    for start in range(4):
        alloc = PortAllocator(40000, 40006, sequential=True)
        alloc.next_index = start
        assert alloc.allocate(busy_bind({40000, 40002, 40006})).port == 40004


def test_release_of_an_unknown_port_is_harmless():
    alloc = PortAllocator(40000, 40002, sequential=True)
    alloc.release(40000)
    alloc.release(12345)
    assert alloc.in_use == set()


def test_allocator_skips_a_port_bound_by_another_socket():
    base, held = free_pairs(2)
    try:
        blocker = held[0]  # keeps the first RTP port taken
        for s in held[1:]:
            s.close()
        alloc = PortAllocator(base, base + 2, sequential=True)
        pair = alloc.allocate(bind_pair(socket.AF_INET, HOST, 0))
        try:
            assert pair.port == base + 2
            assert pair.rtp.getsockname() == (HOST, base + 2)
            assert pair.rtcp.getsockname() == (HOST, base + 3)
            assert alloc.in_use == {base + 2}
        finally:
            pair.close()
    finally:
        for s in held:
            s.close()
    assert blocker.fileno() == -1


def test_allocator_skips_a_pair_whose_rtcp_port_is_taken_and_frees_its_rtp_port():
    base, held = free_pairs(2)
    try:
        for i, s in enumerate(held):
            if i != 1:  # keep base + 1, the first pair's RTCP port
                s.close()
        alloc = PortAllocator(base, base + 2, sequential=True)
        pair = alloc.allocate(bind_pair(socket.AF_INET, HOST, 0))
        try:
            assert pair.port == base + 2
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
                again.bind((HOST, base))  # the half-bound RTP socket was closed
        finally:
            pair.close()
    finally:
        for s in held:
            s.close()


def test_allocator_with_every_port_bound_elsewhere_is_exhausted():
    base, held = free_pairs(2)
    try:
        alloc = PortAllocator(base, base + 2, sequential=True)
        with pytest.raises(PortsExhausted):
            alloc.allocate(bind_pair(socket.AF_INET, HOST, 0))
    finally:
        for s in held:
            s.close()


# bind_pair / open_media_socket


def test_bind_pair_binds_rtp_on_the_even_port_and_rtcp_on_the_next():
    base, pair = pair_on_free_ports()
    try:
        assert pair.port == base
        assert pair.rtp.getsockname() == (HOST, base)
        assert pair.rtcp.getsockname() == (HOST, base + 1)
        assert pair.rtp.type == socket.SOCK_DGRAM
        assert pair.rtcp.type == socket.SOCK_DGRAM
    finally:
        pair.close()
    assert pair.rtp.fileno() == -1
    assert pair.rtcp.fileno() == -1


def test_media_sockets_are_non_blocking_plain_sockets():
    _, pair = pair_on_free_ports()
    try:
        for sock in (pair.rtp, pair.rtcp):
            assert type(sock) is _socket.socket
            assert sock.getblocking() is False
            with pytest.raises(BlockingIOError):
                sock.recvfrom(10)
    finally:
        pair.close()


def test_media_sockets_get_the_tos_on_ipv4():
    _, pair = pair_on_free_ports(0xB8)
    try:
        for sock in (pair.rtp, pair.rtcp):
            assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xB8
    finally:
        pair.close()


def test_zero_tos_leaves_the_default():
    sock = open_media_socket(socket.AF_INET, HOST, 0, 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0
    finally:
        sock.close()


def test_media_socket_asks_for_a_256_kib_receive_buffer():
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
    except OSError:
        pytest.skip("no rmem_max to bound the receive buffer")
    sock = open_media_socket(socket.AF_INET, HOST, 0, 0)
    try:
        # Linux reports twice the requested size, capped by rmem_max.
        expected = 2 * min(256 * 1024, rmem_max)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == expected
    finally:
        sock.close()


def test_open_media_socket_raises_address_in_use_for_a_bound_port():
    first = open_media_socket(socket.AF_INET, HOST, 0, 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError) as info:
            open_media_socket(socket.AF_INET, HOST, port, 0)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        first.close()


def test_bind_pair_raises_for_an_address_that_is_not_local():
    with pytest.raises(OSError) as info:
        bind_pair(socket.AF_INET, "192.0.2.1", 0)(40000)
    assert info.value.errno == errno.EADDRNOTAVAIL
