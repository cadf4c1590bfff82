//! The dynamic containers against `std`: random operation sequences
//! (pushes, reserves, truncates, shrinks, nested values) on `ShmVec`,
//! `ShmString` and `ShmVec<ShmString>` must match `Vec` / `String`, and
//! freeing the whole value must give every byte back.

use matrix_handler::{BlockError, HandlerError, HandlerFunctions, MatrixHandler, ShmSafe};
use matrix_internals::dynamic::{
    DynError, OwnsBlocks, ShmBox, ShmBytes, ShmString, ShmVec, MAX_WALK_DEPTH,
};
use proptest::prelude::*;

fn used(h: &MatrixHandler) -> u64 {
    h.matrix().flush_thread_cache();
    h.stats().unwrap().used_bytes
}

#[derive(Debug, Clone)]
enum VecOp {
    Push(u64),
    Extend(Vec<u64>),
    Reserve(usize),
    Truncate(usize),
    Pop,
    Replace(usize, u64),
    Clear,
    Shrink,
    /// Allocate or free a filler block, so the buffer's neighbours change.
    Filler(usize),
}

fn vec_op() -> impl Strategy<Value = VecOp> {
    prop_oneof![
        6 => any::<u64>().prop_map(VecOp::Push),
        2 => prop::collection::vec(any::<u64>(), 0..300).prop_map(VecOp::Extend),
        1 => (0usize..2000).prop_map(VecOp::Reserve),
        1 => (0usize..400).prop_map(VecOp::Truncate),
        1 => Just(VecOp::Pop),
        1 => (0usize..400, any::<u64>()).prop_map(|(i, v)| VecOp::Replace(i, v)),
        1 => Just(VecOp::Clear),
        1 => Just(VecOp::Shrink),
        2 => (0usize..20_000).prop_map(VecOp::Filler),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shm_vec_matches_std_vec(ops in prop::collection::vec(vec_op(), 1..120)) {
        let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
        let mut shm = ShmVec::<u64>::new();
        let mut model = Vec::new();
        let mut fillers = Vec::new();
        for op in ops {
            match op {
                VecOp::Push(v) => { shm.push(&h, v).unwrap(); model.push(v); }
                VecOp::Extend(vs) => { shm.extend_from_slice(&h, &vs).unwrap(); model.extend_from_slice(&vs); }
                VecOp::Reserve(n) => {
                    shm.try_reserve(&h, n).unwrap();
                    prop_assert!(shm.capacity() >= model.len() + n);
                }
                VecOp::Truncate(n) => { shm.truncate(&h, n).unwrap(); model.truncate(n); }
                VecOp::Pop => prop_assert_eq!(shm.pop(&h).unwrap(), model.pop()),
                VecOp::Replace(i, v) => {
                    let old = model.get_mut(i).map(|slot| std::mem::replace(slot, v));
                    prop_assert_eq!(shm.replace(&h, i, v).unwrap(), old);
                }
                VecOp::Clear => { shm.clear(&h).unwrap(); model.clear(); }
                VecOp::Shrink => {
                    shm.shrink_to_fit(&h).unwrap();
                    prop_assert_eq!(shm.capacity(), model.len());
                }
                VecOp::Filler(n) => {
                    if fillers.len() > 4 || (n % 3 == 0 && !fillers.is_empty()) {
                        h.free(fillers.swap_remove(n % fillers.len())).unwrap();
                    } else {
                        fillers.push(h.allocate_array::<u8>(n).unwrap());
                    }
                }
            }
            prop_assert_eq!(shm.as_slice(&h).unwrap(), &model[..]);
            prop_assert!(shm.capacity() >= shm.len());
        }
        prop_assert_eq!(shm.iter(&h).unwrap().copied().collect::<Vec<_>>(), model);
        shm.free_blocks(&h).unwrap();
        for f in fillers { h.free(f).unwrap(); }
        prop_assert_eq!(used(&h), 0);
    }
}

#[derive(Debug, Clone)]
enum StrOp {
    PushStr(String),
    Push(char),
    Truncate(usize),
    Reserve(usize),
    Clear,
    Shrink,
}

fn str_op() -> impl Strategy<Value = StrOp> {
    prop_oneof![
        5 => ".{0,40}".prop_map(StrOp::PushStr),
        3 => any::<char>().prop_map(StrOp::Push),
        2 => (0usize..200).prop_map(StrOp::Truncate),
        1 => (0usize..500).prop_map(StrOp::Reserve),
        1 => Just(StrOp::Clear),
        1 => Just(StrOp::Shrink),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shm_string_matches_std_string(ops in prop::collection::vec(str_op(), 1..100)) {
        let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
        let mut shm = ShmString::new();
        let mut model = String::new();
        for op in ops {
            match op {
                StrOp::PushStr(s) => { shm.push_str(&h, &s).unwrap(); model.push_str(&s); }
                StrOp::Push(c) => { shm.push(&h, c).unwrap(); model.push(c); }
                StrOp::Truncate(n) => {
                    let r = shm.truncate(&h, n);
                    if n >= model.len() || model.is_char_boundary(n) {
                        r.unwrap();
                        model.truncate(n);
                    } else {
                        prop_assert_eq!(r, Err(DynError::NotCharBoundary { index: n }));
                    }
                }
                StrOp::Reserve(n) => { shm.try_reserve(&h, n).unwrap(); prop_assert!(shm.capacity() >= model.len() + n); }
                StrOp::Clear => { shm.clear(&h).unwrap(); model.clear(); }
                StrOp::Shrink => shm.shrink_to_fit(&h).unwrap(),
            }
            prop_assert_eq!(shm.as_str(&h).unwrap(), model.as_str());
        }
        shm.free_blocks(&h).unwrap();
        prop_assert_eq!(used(&h), 0);
    }

    #[test]
    fn nested_vec_of_strings_matches_std_and_frees_whole(
        ops in prop::collection::vec((0u8..5, ".{0,30}", 0usize..20), 1..80)
    ) {
        let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
        let mut shm = ShmVec::<ShmString>::new();
        let mut model: Vec<String> = Vec::new();
        for (kind, s, i) in ops {
            match kind {
                0 | 1 => { shm.push(&h, ShmString::from_str(&h, &s).unwrap()).unwrap(); model.push(s); }
                2 if i < model.len() => {
                    // Grow one nested string in place of the element.
                    let mut e = shm.get(&h, i).unwrap().unwrap();
                    e.push_str(&h, &s).unwrap();
                    shm.replace(&h, i, e).unwrap();
                    model[i].push_str(&s);
                }
                3 => { shm.truncate(&h, i).unwrap(); model.truncate(i); }
                _ => { shm.try_reserve(&h, i).unwrap(); }
            }
            let got: Vec<&str> = shm.iter(&h).unwrap().map(|e| e.as_str(&h).unwrap()).collect();
            prop_assert_eq!(got, model.iter().map(String::as_str).collect::<Vec<_>>());
        }
        shm.free_blocks(&h).unwrap();
        prop_assert_eq!(used(&h), 0, "freeing the outer vector frees every nested string");
    }
}

/// A record with container fields, derived.
#[derive(ShmSafe, OwnsBlocks, Clone, Copy, Debug)]
#[repr(C)]
struct Sample {
    name: ShmString,
    tags: ShmVec<ShmString>,
    values: ShmVec<f64>,
    raw: ShmBytes,
    id: u64,
}

#[test]
fn a_derived_record_in_a_box_is_read_in_place_and_freed_whole() {
    let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
    let mut tags = ShmVec::new();
    for t in ["a", "bé", "ç"] {
        tags.push(&h, ShmString::from_str(&h, t).unwrap()).unwrap();
    }
    let rec = Sample {
        name: ShmString::from_str(&h, "sensor-7").unwrap(),
        tags,
        values: ShmVec::from_slice(&h, &[1.5, -2.0, 3.25]).unwrap(),
        raw: ShmBytes::from_slice(&h, b"\x00\xff").unwrap(),
        id: 7,
    };
    let mut boxed = ShmBox::new(&h, rec).unwrap();
    // Another handle on the same token, as a consumer would build it.
    let seen = ShmBox::<Sample>::from_token(boxed.token());
    let r = seen.get(&h).unwrap();
    assert_eq!(r.name.as_str(&h).unwrap(), "sensor-7");
    assert_eq!(r.values.as_slice(&h).unwrap(), &[1.5, -2.0, 3.25]);
    assert_eq!(r.raw.as_slice(&h).unwrap(), b"\x00\xff");
    let tags: Vec<&str> = r
        .tags
        .iter(&h)
        .unwrap()
        .map(|t| t.as_str(&h).unwrap())
        .collect();
    assert_eq!(tags, ["a", "bé", "ç"]);
    assert_eq!(r.id, 7);
    boxed.free_blocks(&h).unwrap();
    assert_eq!(used(&h), 0);
    // The copy is stale now: a typed error, never a read of freed memory.
    assert!(matches!(
        seen.get(&h),
        Err(DynError::Handler(HandlerError::Block(
            BlockError::Stale { .. }
        ))) | Err(DynError::Handler(HandlerError::Block(
            BlockError::NotLive { .. }
        )))
    ));
    // Freeing again frees nothing twice.
    boxed.free_blocks(&h).unwrap();
}

#[test]
fn stale_and_foreign_containers_are_typed_errors() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let other = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let mut v = ShmVec::from_slice(&h, &[1u32, 2, 3]).unwrap();
    let copy = v;
    assert!(matches!(
        copy.as_slice(&other),
        Err(DynError::Handler(HandlerError::ForeignHandle { .. }))
    ));
    // Growing renews the buffer's generation: an old copy is stale.
    v.extend_from_slice(&h, &[0; 1000]).unwrap();
    assert!(matches!(
        copy.as_slice(&h),
        Err(DynError::Handler(HandlerError::Block(_)))
    ));
    let mut s = ShmString::from_str(&h, "hé").unwrap();
    assert_eq!(
        s.truncate(&h, 2),
        Err(DynError::NotCharBoundary { index: 2 })
    );
    assert_eq!(s.as_str(&h).unwrap(), "hé");
    // Capacity beyond 32 bits of elements.
    assert!(matches!(
        v.try_reserve(&h, usize::MAX),
        Err(DynError::CapacityOverflow { .. })
    ));
    v.free_blocks(&h).unwrap();
    s.free_blocks(&h).unwrap();
    assert_eq!(used(&h), 0);
}

#[test]
fn a_buffer_of_another_participant_is_not_written() {
    let name = matrix_core::ScratchName::new("dyn-owner");
    let a = MatrixHandler::create(name.as_str(), 1 << 20).unwrap();
    let b = MatrixHandler::open(name.as_str()).unwrap();
    let mut v = ShmVec::from_slice(&a, &[1u8, 2, 3]).unwrap();
    let mut theirs = v;
    assert!(matches!(
        theirs.push(&b, 4),
        Err(DynError::NotWriter { .. })
    ));
    assert_eq!(theirs.as_slice(&b).unwrap(), &[1, 2, 3], "readers may read");
    // The hand-over: the receiver adopts, then writes.
    theirs.adopt(&b).unwrap();
    theirs.push(&b, 4).unwrap();
    assert!(matches!(
        v.push(&a, 9),
        Err(DynError::Handler(_)) | Err(DynError::NotWriter { .. })
    ));
    theirs.free_blocks(&b).unwrap();
    drop(b);
    drop(a);
}

/// A `T` read from a block whose bytes were overwritten with `bytes`, as a
/// hostile process or a torn write could leave them.
fn forge<T: ShmSafe + Copy + Default>(h: &MatrixHandler, bytes: [u8; 24]) -> T {
    assert_eq!(std::mem::size_of::<T>(), bytes.len());
    let mut slot = h.allocate::<T>().unwrap();
    h.write_elems(&mut slot, 0, &[T::default()]).unwrap();
    // SAFETY: the 24 bytes of a live block this test owns, inside the
    // mapping; `T` is ShmSafe, so any bytes there are a `T`.
    unsafe {
        let at = h.base_ptr().add(slot.offset() as usize) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
    }
    let value = *h.get(&slot).unwrap();
    h.free(slot).unwrap();
    value
}

/// A container value is plain bytes (`ShmSafe`: every bit pattern is a
/// value), so one read from a block another process wrote, or from a
/// record a crashed writer left half-written, can say anything. Every
/// method then returns a typed error or a consistent answer, never panics.
#[test]
fn forged_container_values_are_typed_errors_never_panics() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let real = ShmVec::from_slice(&h, &[7u8; 8]).unwrap();
    // (token, len, cap): no buffer but elements; more elements than the
    // buffer holds; a capacity beyond the buffer.
    let forgeries: [(u128, u32, u32); 4] = [
        (0, 5, 5),
        (0, 0, 5),
        (real.token().to_u128(), 200, 200),
        (real.token().to_u128(), 8, 1000),
    ];
    for (token, len, cap) in forgeries {
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&token.to_ne_bytes());
        bytes[16..20].copy_from_slice(&len.to_ne_bytes());
        bytes[20..].copy_from_slice(&cap.to_ne_bytes());
        let forged: ShmVec<u8> = forge(&h, bytes);
        let what = format!("forged (token {token:#x}, len {len}, cap {cap})");
        // Each forgery disagrees with its buffer, and says so.
        assert!(
            matches!(forged.as_slice(&h), Err(DynError::Corrupted { .. })),
            "{what}: {:?}",
            forged.as_slice(&h)
        );
        let _ = forged.get(&h, 3);
        let _ = forged.iter(&h).map(|it| it.count());
        let mut v = forged;
        let _ = v.push(&h, 1);
        let mut v = forged;
        let _ = v.extend_from_slice(&h, &[1, 2, 3]);
        let mut v = forged;
        let _ = v.pop(&h);
        let mut v = forged;
        let _ = v.replace(&h, 2, 9);
        let mut v = forged;
        let _ = v.truncate(&h, 1);
        let mut v = forged;
        let _ = v.try_reserve(&h, 3);
        let forged_string: ShmString = forge(&h, bytes);
        let _ = forged_string.as_str(&h);
        let mut s = forged_string;
        let _ = s.push_str(&h, "abc");
        let mut s = forged_string;
        let _ = s.truncate(&h, 1);
    }
    assert_eq!(
        real.as_slice(&h).unwrap(),
        &[7u8; 8],
        "the real buffer is untouched"
    );
}

/// A node of a list built from boxes: a type may name itself through
/// `ShmBox`, so safe code can build long chains and cycles. (The derives
/// cannot see through the recursion, so the impls are written out.)
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Node {
    next: ShmBox<Node>,
    value: u64,
}

// SAFETY: repr(C), a token (plain integers) and a u64, no padding: every
// bit pattern is a Node, and it holds no pointer.
unsafe impl ShmSafe for Node {}

impl OwnsBlocks for Node {
    fn free_blocks<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        self.next.free_blocks(h)
    }
    fn visit_blocks<H: HandlerFunctions>(
        &self,
        h: &H,
        visit: &mut dyn FnMut(matrix_handler::BlockToken),
    ) {
        self.next.visit_blocks(h, visit)
    }
}

fn chain(h: &MatrixHandler, len: usize) -> ShmBox<Node> {
    let mut head = ShmBox::from_token(matrix_handler::BlockToken::from_u128(0));
    for value in 0..len as u64 {
        head = ShmBox::new(h, Node { next: head, value }).unwrap();
    }
    head
}

/// A box that (through its value) names itself is freed once, and the
/// walk ends; a chain too deep to walk on the stack is a typed error that
/// frees nothing, never a stack overflow.
#[test]
fn cycles_and_deep_chains_of_boxes_end_in_typed_errors() {
    let h = MatrixHandler::bootstrap(None, 64 << 20).unwrap();
    let base = used(&h);
    let mut a = chain(&h, 1);
    let mut b = chain(&h, 1);
    // a -> b -> a.
    let a_token = a.token();
    b.replace(
        &h,
        Node {
            next: ShmBox::from_token(a_token),
            value: 2,
        },
    )
    .unwrap();
    a.replace(&h, Node { next: b, value: 1 }).unwrap();
    let mut seen = 0;
    a.visit_blocks(&h, &mut |_| seen += 1);
    assert_eq!(seen, 2, "the walk visits each block of the cycle once");
    let freed = a.free_blocks(&h);
    assert_eq!(
        used(&h),
        base,
        "both blocks of the cycle are freed: {freed:?}"
    );

    // Deeper than a walk may go: refused, nothing freed, on a spawned
    // thread's default stack.
    let mut long = chain(&h, 100_000);
    let before = used(&h);
    let refused = std::thread::scope(|s| s.spawn(|| long.free_blocks(&h)).join().unwrap());
    assert_eq!(
        refused,
        Err(DynError::TooDeep {
            limit: MAX_WALK_DEPTH
        })
    );
    assert_eq!(used(&h), before, "a refused free frees nothing");
    let mut walked = 0;
    long.visit_blocks(&h, &mut |_| walked += 1);
    assert_eq!(walked, MAX_WALK_DEPTH, "the walk stops at the limit");
    // Unlinked from the front, a node at a time, the chain frees whole.
    let mut head = long;
    while head.token().nonce() != 0 {
        let next = head.get(&h).unwrap().next;
        let empty = ShmBox::from_token(matrix_handler::BlockToken::from_u128(0));
        head.replace(
            &h,
            Node {
                next: empty,
                value: 0,
            },
        )
        .unwrap();
        head.free_blocks(&h).unwrap();
        head = next;
    }
    // A chain just inside the limit frees in one call.
    let mut short = chain(&h, MAX_WALK_DEPTH as usize);
    std::thread::scope(|s| s.spawn(|| short.free_blocks(&h)).join().unwrap()).unwrap();
    assert_eq!(used(&h), base);
}

#[derive(Debug, Clone)]
enum BytesOp {
    Extend(Vec<u8>),
    Truncate(usize),
    Clear,
    Shrink,
    /// Put the current bytes in the box (the old boxed value is freed).
    Box,
}

fn bytes_op() -> impl Strategy<Value = BytesOp> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..300).prop_map(BytesOp::Extend),
        1 => (0usize..600).prop_map(BytesOp::Truncate),
        1 => Just(BytesOp::Clear),
        1 => Just(BytesOp::Shrink),
        2 => Just(BytesOp::Box),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `ShmBytes` against `Vec<u8>`, and a `ShmBox<ShmBytes>` whose value
    /// is replaced against the model's last boxed copy: each replaced
    /// value is freed whole, and the box reads in place.
    #[test]
    fn shm_bytes_and_a_box_of_them_match_std(ops in prop::collection::vec(bytes_op(), 1..80)) {
        let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
        let mut shm = ShmBytes::new();
        let mut model: Vec<u8> = Vec::new();
        let mut boxed = ShmBox::new(&h, ShmBytes::new()).unwrap();
        let mut boxed_model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                BytesOp::Extend(b) => { shm.extend_from_slice(&h, &b).unwrap(); model.extend_from_slice(&b); }
                BytesOp::Truncate(n) => { shm.as_vec_mut().truncate(&h, n).unwrap(); model.truncate(n); }
                BytesOp::Clear => { shm.as_vec_mut().clear(&h).unwrap(); model.clear(); }
                BytesOp::Shrink => { shm.as_vec_mut().shrink_to_fit(&h).unwrap(); }
                BytesOp::Box => {
                    let copy = ShmBytes::from_slice(&h, shm.as_slice(&h).unwrap()).unwrap();
                    let mut old = boxed.replace(&h, copy).unwrap();
                    prop_assert_eq!(old.as_slice(&h).unwrap(), &boxed_model[..]);
                    old.free_blocks(&h).unwrap();
                    boxed_model = model.clone();
                }
            }
            prop_assert_eq!(shm.as_slice(&h).unwrap(), &model[..]);
            prop_assert_eq!(shm.len(), model.len());
            prop_assert_eq!(boxed.get(&h).unwrap().as_slice(&h).unwrap(), &boxed_model[..]);
        }
        shm.free_blocks(&h).unwrap();
        boxed.free_blocks(&h).unwrap();
        prop_assert_eq!(used(&h), 0);
    }
}
