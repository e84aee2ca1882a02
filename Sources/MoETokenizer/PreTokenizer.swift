import MoEJSON
/// A piece of text between pre-tokenizer splits, as Unicode scalar values. `atOrigin` is true for the
/// piece that starts at offset 0 of the original input (Metaspace's "first" prepend scheme asks).
struct Piece {
    var scalars: [UInt32]
    var atOrigin: Bool
}

/// tokenizer.json "pre_tokenizer" stages.
protocol PreTokenizer: Sendable {
    func split(_ pieces: [Piece]) throws -> [Piece]
}

enum SplitBehavior: String, Sendable {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"
}

/// Splits one piece by match ranges the way HF's `NormalizedString::split` does; empty pieces are dropped.
func splitPiece(_ p: Piece, matches: [Range<Int>], behavior: SplitBehavior, invert: Bool = false) -> [Piece] {
    let n = p.scalars.count
    if n == 0 { return [] }
    // (range, isMatch) covering the piece.
    var parts: [(Range<Int>, Bool)] = []
    var prev = 0
    for m in matches {
        if prev != m.lowerBound { parts.append((prev..<m.lowerBound, invert)) }
        parts.append((m, !invert))
        prev = m.upperBound
    }
    if prev != n { parts.append((prev..<n, invert)) }

    var kept: [(Range<Int>, Bool)] = []   // (range, remove)
    switch behavior {
    case .isolated:
        kept = parts.map { ($0.0, false) }
    case .removed:
        kept = parts
    case .contiguous:
        var previous = false
        for (r, isMatch) in parts {
            if isMatch == previous, let last = kept.last { kept[kept.count - 1] = (last.0.lowerBound..<r.upperBound, false) }
            else { kept.append((r, false)) }
            previous = isMatch
        }
    case .mergedWithPrevious:
        var previous = false
        for (r, isMatch) in parts {
            if isMatch && !previous, let last = kept.last { kept[kept.count - 1] = (last.0.lowerBound..<r.upperBound, false) }
            else { kept.append((r, false)) }
            previous = isMatch
        }
    case .mergedWithNext:
        var previous = false
        for (r, isMatch) in parts.reversed() {
            if isMatch && !previous, let last = kept.last { kept[kept.count - 1] = (r.lowerBound..<last.0.upperBound, false) }
            else { kept.append((r, false)) }
            previous = isMatch
        }
        kept.reverse()
    }
    return kept.compactMap { r, remove in
        guard !remove, !r.isEmpty else { return nil }
        return Piece(scalars: Array(p.scalars[r]), atOrigin: p.atOrigin && r.lowerBound == 0)
    }
}

struct SequencePreTokenizer: PreTokenizer {
    let stages: [any PreTokenizer]
    func split(_ pieces: [Piece]) throws -> [Piece] { try stages.reduce(pieces) { try $1.split($0) } }
}

struct PatternSplitPreTokenizer: PreTokenizer {
    let pattern: ReplacePattern
    let behavior: SplitBehavior
    let invert: Bool
    func split(_ pieces: [Piece]) throws -> [Piece] {
        try pieces.flatMap { p in splitPiece(p, matches: try pattern.matches(in: PatternRegex.Text(p.scalars)), behavior: behavior, invert: invert) }
    }
}

/// Splits on every scalar satisfying a predicate (Digits, WhitespaceSplit).
struct PredicateSplitPreTokenizer: PreTokenizer {
    let predicate: @Sendable (UInt32) -> Bool
    let behavior: SplitBehavior
    func split(_ pieces: [Piece]) -> [Piece] {
        pieces.flatMap { p in
            let m = p.scalars.indices.filter { predicate(p.scalars[$0]) }.map { $0..<($0 + 1) }
            return splitPiece(p, matches: m, behavior: behavior)
        }
    }
}

/// Metaspace: spaces become the replacement character (▁), which is prepended per `prepend_scheme`.
struct MetaspacePreTokenizer: PreTokenizer {
    enum Scheme: String { case always, first, never }
    let replacement: UInt32
    let scheme: Scheme
    let splitOnReplacement: Bool

    func split(_ pieces: [Piece]) -> [Piece] {
        pieces.flatMap { p -> [Piece] in
            // HF's prepend does nothing on an empty string, so empty input yields no token.
            if p.scalars.isEmpty { return [] }
            var q = p
            for i in q.scalars.indices where q.scalars[i] == 0x20 { q.scalars[i] = replacement }
            let startsWithReplacement = q.scalars.first == replacement
            switch scheme {
            case .always: if !startsWithReplacement { q.scalars.insert(replacement, at: 0) }
            case .first: if !startsWithReplacement && q.atOrigin { q.scalars.insert(replacement, at: 0) }
            case .never: break
            }
            guard splitOnReplacement else { return q.scalars.isEmpty ? [] : [q] }
            let m = q.scalars.indices.filter { q.scalars[$0] == replacement }.map { $0..<($0 + 1) }
            return splitPiece(q, matches: m, behavior: .mergedWithNext)
        }
    }
}

/// GPT-2 byte-level: optional prefix space, optional GPT-2 regex split, then every UTF-8 byte becomes
/// one printable character of the byte-level alphabet.
struct ByteLevelPreTokenizer: PreTokenizer {
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let gpt2 = try! PatternRegex(gpt2Pattern)
    let addPrefixSpace: Bool
    let useRegex: Bool

    func split(_ pieces: [Piece]) throws -> [Piece] {
        var out: [Piece] = []
        for p in pieces where !p.scalars.isEmpty {
            var q = p
            if addPrefixSpace && q.scalars.first != 0x20 { q.scalars.insert(0x20, at: 0) }
            let parts = useRegex ? splitPiece(q, matches: try Self.gpt2.matches(in: PatternRegex.Text(q.scalars)), behavior: .isolated)
                                 : (q.scalars.isEmpty ? [] : [q])
            for var part in parts {
                part.scalars = ByteLevel.encode(part.scalars)
                out.append(part)
            }
        }
        return out
    }
}

/// The GPT-2 byte ↔ character table.
enum ByteLevel {
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + n
                n += 1
            }
        }
        return table
    }()

    static let scalarToByte: [UInt32: UInt8] = {
        var d: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { d[s] = UInt8(b) }
        return d
    }()

    /// UTF-8 bytes of the scalars, each mapped to its byte-level character.
    static func encode(_ scalars: [UInt32]) -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(scalars.count + 4)
        for v in scalars {
            if v < 0x80 { out.append(byteToScalar[Int(v)]); continue }
            for b in String(Unicode.Scalar(v)!).utf8 { out.append(byteToScalar[Int(b)]) }
        }
        return out
    }
}

func makePreTokenizer(_ node: JSONNode) throws -> (any PreTokenizer)? {
    if node.isNull { return nil }
    switch try node.type() {
    case "Sequence":
        return SequencePreTokenizer(stages: try node["pretokenizers"].array().compactMap { try makePreTokenizer($0) })
    case "ByteLevel":
        return ByteLevelPreTokenizer(addPrefixSpace: try node["add_prefix_space"].bool(default: true),
                                     useRegex: try node["use_regex"].bool(default: true))
    case "Metaspace":
        let rep = try node["replacement"].string().unicodeScalars
        guard rep.count == 1 else { throw node["replacement"].fail("should be one character") }
        var scheme = MetaspacePreTokenizer.Scheme.always
        if let s = try node["prepend_scheme"].optionalString() {
            guard let v = MetaspacePreTokenizer.Scheme(rawValue: s) else { throw node["prepend_scheme"].fail("unknown scheme \"\(s)\"") }
            scheme = v
        } else if !(try node["add_prefix_space"].bool(default: true)) {
            scheme = .never
        }
        return MetaspacePreTokenizer(replacement: rep.first!.value, scheme: scheme, splitOnReplacement: try node["split"].bool(default: true))
    case "Split":
        let b = try node["behavior"].string()
        guard let behavior = SplitBehavior(rawValue: b) else { throw node["behavior"].fail("unknown behavior \"\(b)\"") }
        return PatternSplitPreTokenizer(pattern: try ReplacePattern(node["pattern"]), behavior: behavior, invert: try node["invert"].bool(default: false))
    case "Digits":
        let individual = try node["individual_digits"].bool(default: false)
        return PredicateSplitPreTokenizer(predicate: { UnicodeCategory.of($0) & UnicodeCategory.N != 0 },
                                          behavior: individual ? .isolated : .contiguous)
    case "Whitespace":
        return PatternSplitPreTokenizer(pattern: .regex(try PatternRegex(#"\w+|[^\w\s]+"#)), behavior: .removed, invert: true)
    case "WhitespaceSplit":
        return PredicateSplitPreTokenizer(predicate: { UnicodeCategory.of($0) & UnicodeCategory.whiteSpace != 0 }, behavior: .removed)
    case let t:
        throw node.fail("unsupported pre-tokenizer \"\(t)\" (supported: Sequence, ByteLevel, Metaspace, Split, Digits, Whitespace, WhitespaceSplit)")
    }
}
