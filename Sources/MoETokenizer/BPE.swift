import MoEJSON
import Foundation

/// The BPE model of tokenizer.json, following HF `tokenizers` (models/bpe): characters → ids (with byte
/// fallback `<0xXX>` and an optionally fused unknown token), then merges applied lowest rank first, ties to
/// the leftmost pair; `ignore_merges` looks the whole word up first. Words are cached.
final class BPE: @unchecked Sendable {
    /// Token (as Unicode scalars, so canonically equivalent spellings stay distinct) → id.
    let vocab: [[UInt32]: Int32]
    let idToToken: [String]
    /// (left id << 32 | right id) → (rank, merged id)
    let merges: [UInt64: (rank: Int32, id: Int32)]
    let unkID: Int32?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let continuingSubwordPrefix: String?
    let endOfWordSuffix: String?
    /// Id of each single-scalar token for scalars below 0x10000 (-1 when absent): the fast path.
    private let scalarID: [Int32]
    private let byteFallbackID: [Int32]
    private var cache: [[UInt32]: [Int32]] = [:]
    private let lock = NSLock()
    static let cacheLimit = 200_000

    static func scalars(_ s: String) -> [UInt32] { s.unicodeScalars.map(\.value) }

    init(_ node: JSONNode) throws {
        guard let members = node["vocab"].members else { throw node["vocab"].fail("missing or not an object") }
        var vocab: [[UInt32]: Int32] = [:]
        vocab.reserveCapacity(members.count)
        var maxID = -1
        for (tok, value) in members {
            guard case .number(let d, true) = value, let id = Int(exactly: d), id >= 0, id < Int(Int32.max) else {
                throw node["vocab"].fail("id of \(tok.debugDescription) is not a non-negative integer")
            }
            vocab[Self.scalars(tok)] = Int32(id)
            maxID = max(maxID, id)
        }
        self.vocab = vocab
        var inverse = [String](repeating: "", count: maxID + 1)
        for (tok, value) in members { if case .number(let d, _) = value { inverse[Int(d)] = tok } }
        idToToken = inverse

        var merges: [UInt64: (Int32, Int32)] = [:]
        let subwordPrefix = try node["continuing_subword_prefix"].optionalString()
        let list = try node["merges"].array()
        merges.reserveCapacity(list.count)
        for (rank, m) in list.enumerated() {
            let a: String, b: String
            if let s = m.stringValue {
                let parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw m.fail("merge \(s.debugDescription) is not \"a b\"") }
                a = String(parts[0]); b = String(parts[1])
            } else if case .array(let pair)? = m.value, pair.count == 2, case .string(let x) = pair[0], case .string(let y) = pair[1] {
                a = x; b = y
            } else {
                throw m.fail("merge should be \"a b\" or [\"a\", \"b\"]")
            }
            let sa = Self.scalars(a), sb = Self.scalars(b)
            guard let ia = vocab[sa] else { throw m.fail("merge names unknown token \(a.debugDescription)") }
            guard let ib = vocab[sb] else { throw m.fail("merge names unknown token \(b.debugDescription)") }
            var joined = sa + sb
            if let prefix = subwordPrefix, b.hasPrefix(prefix) { joined = sa + Array(sb.dropFirst(prefix.unicodeScalars.count)) }
            guard let im = vocab[joined] else { throw m.fail("merged token \((a + b).debugDescription) is not in the vocabulary") }
            let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
            if merges[key] == nil { merges[key] = (Int32(rank), im) }
        }
        self.merges = merges.mapValues { (rank: $0.0, id: $0.1) }

        if let unk = try node["unk_token"].optionalString() {
            guard let id = vocab[Self.scalars(unk)] else { throw node["unk_token"].fail("\(unk.debugDescription) is not in the vocabulary") }
            unkID = id
        } else {
            unkID = nil
        }
        fuseUnk = try node["fuse_unk"].bool(default: false)
        byteFallback = try node["byte_fallback"].bool(default: false)
        ignoreMerges = try node["ignore_merges"].bool(default: false)
        continuingSubwordPrefix = subwordPrefix
        endOfWordSuffix = try node["end_of_word_suffix"].optionalString()
        // HF: a dropout outside [0, 1] is refused; inside (0, 1] it samples merges, which MoEPress does not (refused).
        if !node["dropout"].isNull {
            guard let d = node["dropout"].double(), d >= 0, d <= 1 else { throw node["dropout"].fail("should be a number from 0 to 1 (or null)") }
            if d > 0 { throw node["dropout"].fail("BPE dropout is not supported (inference is deterministic)") }
        }

        var table = [Int32](repeating: -1, count: 0x10000)
        for (t, i) in vocab where t.count == 1 && t[0] < 0x10000 { table[Int(t[0])] = i }
        scalarID = table
        byteFallbackID = (0..<256).map { vocab[Self.scalars(String(format: "<0x%02X>", $0))] ?? -1 }
    }

    func id(forToken s: String) -> Int32? { vocab[Self.scalars(s)] }

    var vocabSize: Int { idToToken.count }

    func id(of scalars: ArraySlice<UInt32>) -> Int32? {
        if scalars.count == 1, let v = scalars.first, v < 0x10000 {
            let i = scalarID[Int(v)]
            return i >= 0 ? i : nil
        }
        return vocab[Array(scalars)]
    }

    /// Token ids of one pre-tokenized word.
    func tokenize(_ word: [UInt32], into out: inout [Int32]) {
        if word.isEmpty { return }
        lock.lock()
        if let hit = cache[word] {
            lock.unlock()
            out.append(contentsOf: hit)
            return
        }
        lock.unlock()
        let ids = merge(word)
        lock.lock()
        if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[word] = ids
        lock.unlock()
        out.append(contentsOf: ids)
    }

    struct Symbol {
        var id: Int32
        var prev: Int32
        var next: Int32
        var alive: Bool
    }

    func merge(_ word: [UInt32]) -> [Int32] {
        if ignoreMerges, let whole = id(of: word[...]) { return [whole] }
        // 1. Characters to symbols.
        var symbols: [Symbol] = []
        symbols.reserveCapacity(word.count)
        var pendingUnk = false
        func add(_ id: Int32) {
            symbols.append(Symbol(id: id, prev: Int32(symbols.count - 1), next: Int32(symbols.count + 1), alive: true))
        }
        let simple = continuingSubwordPrefix == nil && endOfWordSuffix == nil
        for (i, v) in word.enumerated() {
            var found: Int32?
            if simple {
                found = id(of: word[i...i])
            } else {
                var s = String(Unicode.Scalar(v)!)
                if i > 0, let p = continuingSubwordPrefix { s = p + s }
                if i == word.count - 1, let x = endOfWordSuffix { s += x }
                found = vocab[Self.scalars(s)]
            }
            if let id = found {
                if pendingUnk, let u = unkID { add(u); pendingUnk = false }
                add(id)
                continue
            }
            if byteFallback {
                let bytes = Array(String(Unicode.Scalar(v)!).utf8)
                let ids = bytes.map { byteFallbackID[Int($0)] }
                if ids.allSatisfy({ $0 >= 0 }) {
                    // As in HF, a pending unknown token is not flushed before byte-fallback tokens.
                    for id in ids { add(id) }
                    continue
                }
            }
            if let u = unkID {
                if pendingUnk && !fuseUnk { add(u) }
                pendingUnk = true
            }
        }
        if pendingUnk, let u = unkID { add(u) }
        if symbols.isEmpty { return [] }
        symbols[symbols.count - 1].next = -1
        if symbols.count == 1 { return [symbols[0].id] }

        // 2. Merges, by a min-heap on (rank, position).
        var heap = MergeHeap()
        for i in 0..<(symbols.count - 1) {
            if let m = merges[key(symbols[i].id, symbols[i + 1].id)] { heap.push(.init(rank: m.rank, pos: Int32(i), id: m.id)) }
        }
        while let top = heap.pop() {
            let pos = Int(top.pos)
            guard symbols[pos].alive, symbols[pos].next >= 0 else { continue }
            let nextPos = Int(symbols[pos].next)
            guard let m = merges[key(symbols[pos].id, symbols[nextPos].id)], m.id == top.id else { continue }
            symbols[pos].id = top.id
            symbols[nextPos].alive = false
            let after = symbols[nextPos].next
            symbols[pos].next = after
            if after >= 0 { symbols[Int(after)].prev = Int32(pos) }
            let prev = symbols[pos].prev
            if prev >= 0, let pm = merges[key(symbols[Int(prev)].id, top.id)] {
                heap.push(.init(rank: pm.rank, pos: prev, id: pm.id))
            }
            if after >= 0, let nm = merges[key(top.id, symbols[Int(after)].id)] {
                heap.push(.init(rank: nm.rank, pos: Int32(pos), id: nm.id))
            }
        }
        var out: [Int32] = []
        var i: Int32 = 0
        while i >= 0 {
            out.append(symbols[Int(i)].id)
            i = symbols[Int(i)].next
        }
        return out
    }

    @inline(__always) func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
}

/// A binary min-heap of pending merges ordered by (rank, position).
struct MergeHeap {
    struct Item {
        var rank: Int32
        var pos: Int32
        var id: Int32
        @inline(__always) static func < (a: Item, b: Item) -> Bool { a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos }
    }
    var items: [Item] = []

    mutating func push(_ x: Item) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if items[i] < items[p] { items.swapAt(i, p); i = p } else { break }
        }
    }

    mutating func pop() -> Item? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l] < items[m] { m = l }
                if r < items.count && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
