import MoEJSON
import Foundation

/// tokenizer.json "normalizer" stages.
protocol Normalizer: Sendable {
    func normalize(_ s: String) throws -> String
}

struct SequenceNormalizer: Normalizer {
    let stages: [any Normalizer]
    func normalize(_ s: String) throws -> String { try stages.reduce(s) { try $1.normalize($0) } }
}

struct PrependNormalizer: Normalizer {
    let prefix: String
    func normalize(_ s: String) -> String { s.isEmpty ? s : prefix + s }
}

struct ReplaceNormalizer: Normalizer {
    let pattern: ReplacePattern
    let content: String
    func normalize(_ s: String) throws -> String { try pattern.replace(in: s, with: content) }
}

struct UnicodeNormalizer: Normalizer {
    enum Form { case nfc, nfkc, nfd, nfkd }
    let form: Form
    func normalize(_ s: String) -> String {
        switch form {
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        }
    }
}

struct LowercaseNormalizer: Normalizer {
    func normalize(_ s: String) -> String { s.lowercased() }
}

struct StripNormalizer: Normalizer {
    let left: Bool, right: Bool
    func normalize(_ s: String) -> String {
        var scalars = Substring(s).unicodeScalars[...]
        if left { while let f = scalars.first, f.properties.isWhitespace { scalars.removeFirst() } }
        if right { while let l = scalars.last, l.properties.isWhitespace { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }
}

/// A Replace pattern: a literal string or a regex ({"String": …} or {"Regex": …}).
enum ReplacePattern: Sendable {
    case literal(String)
    case regex(PatternRegex)

    init(_ node: JSONNode) throws {
        if let s = node["String"].stringValue {
            self = .literal(s)
        } else if let r = node["Regex"].stringValue {
            do { self = .regex(try PatternRegex(r)) } catch let e as RegexError { throw node.fail(e.description) }
        } else {
            throw node.fail("needs {\"String\": …} or {\"Regex\": …}")
        }
    }

    func replace(in s: String, with content: String) throws -> String {
        switch self {
        case .literal, .regex:
            // Scalar by scalar: Foundation's replacingOccurrences matches canonically equivalent text too.
            let scalars = Array(s.unicodeScalars)
            let text = PatternRegex.Text(scalars.map(\.value))
            var out = String.UnicodeScalarView()
            var last = 0
            for m in try matches(in: text) where !m.isEmpty {
                out.append(contentsOf: scalars[last..<m.lowerBound])
                out.append(contentsOf: content.unicodeScalars)
                last = m.upperBound
            }
            out.append(contentsOf: scalars[last...])
            return String(out)
        }
    }

    /// Literal or regex match ranges over scalars.
    func matches(in text: PatternRegex.Text) throws -> [Range<Int>] {
        switch self {
        case .regex(let re): return try re.matches(in: text)
        case .literal(let p):
            let needle = p.unicodeScalars.map(\.value)
            guard !needle.isEmpty else { return [] }
            var out: [Range<Int>] = []
            var i = 0
            let hay = text.scalars
            while i + needle.count <= hay.count {
                if hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle {
                    out.append(i..<(i + needle.count))
                    i += needle.count
                } else {
                    i += 1
                }
            }
            return out
        }
    }
}

func makeNormalizer(_ node: JSONNode) throws -> (any Normalizer)? {
    if node.isNull { return nil }
    switch try node.type() {
    case "Sequence":
        return SequenceNormalizer(stages: try node["normalizers"].array().compactMap { try makeNormalizer($0) })
    case "Prepend": return PrependNormalizer(prefix: try node["prepend"].string())
    case "Replace": return ReplaceNormalizer(pattern: try ReplacePattern(node["pattern"]), content: try node["content"].string())
    case "NFC": return UnicodeNormalizer(form: .nfc)
    case "NFKC": return UnicodeNormalizer(form: .nfkc)
    case "NFD": return UnicodeNormalizer(form: .nfd)
    case "NFKD": return UnicodeNormalizer(form: .nfkd)
    case "Lowercase": return LowercaseNormalizer()
    case "Strip": return StripNormalizer(left: try node["strip_left"].bool(default: true), right: try node["strip_right"].bool(default: true))
    case let t:
        throw node.fail("unsupported normalizer \"\(t)\" (supported: Sequence, Prepend, Replace, NFC, NFKC, NFD, NFKD, Lowercase, Strip)")
    }
}
