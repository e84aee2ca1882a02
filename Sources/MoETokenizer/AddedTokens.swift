/// One entry of tokenizer.json "added_tokens".
public struct AddedToken: Sendable, Equatable {
    public let id: Int
    public let content: String
    public let singleWord: Bool
    public let lstrip: Bool
    public let rstrip: Bool
    public let normalized: Bool
    public let special: Bool
}

/// Finds added tokens in text by leftmost-longest matching over UTF-8 (as HF's Aho-Corasick with
/// `MatchKind::LeftmostLongest`), applying `single_word`, `lstrip` and `rstrip`.
struct AddedTokenMatcher: Sendable {
    final class Node: @unchecked Sendable {
        var children: [UInt8: Node] = [:]
        var token: Int?   // index into tokens
    }
    let root = Node()
    let tokens: [AddedToken]
    let patterns: [[UInt8]]

    /// `patterns[i]` is what to look for for `tokens[i]` (its content, normalized when it is a normalized token).
    init(tokens: [AddedToken], patterns: [String]) {
        self.tokens = tokens
        self.patterns = patterns.map { Array($0.utf8) }
        for (i, p) in self.patterns.enumerated() where !p.isEmpty {
            var n = root
            for b in p {
                if let c = n.children[b] { n = c } else { let c = Node(); n.children[b] = c; n = c }
            }
            if n.token == nil { n.token = i }
        }
    }

    var isEmpty: Bool { tokens.isEmpty }

    enum Part { case text(ArraySlice<UInt8>), token(Int) }

    /// Splits `bytes` into text and added-token parts covering it.
    func split(_ bytes: [UInt8]) -> [(range: Range<Int>, id: Int?)] {
        if tokens.isEmpty || bytes.isEmpty { return [(0..<bytes.count, nil)] }
        var out: [(Range<Int>, Int?)] = []
        var startOffset = 0
        var i = 0
        let n = bytes.count
        while i < n {
            // Longest match starting at i.
            var node = root
            var best: (len: Int, token: Int)?
            var j = i
            while j < n, let c = node.children[bytes[j]] {
                node = c
                j += 1
                if let t = node.token { best = (j - i, t) }
            }
            guard let (len, t) = best else { i += 1; continue }
            var start = i, stop = i + len
            let tok = tokens[t]
            if tok.singleWord {
                let startSpace = start == 0 || !endsWithWord(bytes[..<start])
                let stopSpace = stop == n || !startsWithWord(bytes[stop...])
                if !startSpace || !stopSpace { i += 1; continue }
            }
            if tok.lstrip {
                var s = start
                while s > 0, let (v, len) = lastScalar(bytes[..<s]), isSpace(v) { s -= len }
                start = max(s, startOffset)
            }
            if tok.rstrip {
                while stop < n, let (v, len) = firstScalar(bytes[stop...]), isSpace(v) { stop += len }
            }
            if startOffset < start { out.append((startOffset..<start, nil)) }
            out.append((start..<stop, tok.id))
            startOffset = stop
            i = stop
        }
        if startOffset != n { out.append((startOffset..<n, nil)) }
        return out
    }
}

func isSpace(_ v: UInt32) -> Bool { UnicodeCategory.of(v) & UnicodeCategory.whiteSpace != 0 }
func isWordScalar(_ v: UInt32) -> Bool {
    UnicodeCategory.of(v) & (UnicodeCategory.L | UnicodeCategory.M | UnicodeCategory.Nd | UnicodeCategory.Pc) != 0
}

func firstScalar(_ b: ArraySlice<UInt8>) -> (UInt32, Int)? {
    guard let f = b.first else { return nil }
    let len = f < 0x80 ? 1 : f < 0xE0 ? 2 : f < 0xF0 ? 3 : 4
    guard b.count >= len else { return nil }
    guard let s = String(decoding: b.prefix(len), as: UTF8.self).unicodeScalars.first else { return nil }
    return (s.value, len)
}

func lastScalar(_ b: ArraySlice<UInt8>) -> (UInt32, Int)? {
    guard !b.isEmpty else { return nil }
    var k = b.endIndex - 1
    while k > b.startIndex && (b[k] & 0xC0) == 0x80 { k -= 1 }
    guard let s = String(decoding: b[k...], as: UTF8.self).unicodeScalars.first else { return nil }
    return (s.value, b.endIndex - k)
}

func endsWithWord(_ b: ArraySlice<UInt8>) -> Bool { lastScalar(b).map { isWordScalar($0.0) } ?? false }
func startsWithWord(_ b: ArraySlice<UInt8>) -> Bool { firstScalar(b).map { isWordScalar($0.0) } ?? false }
