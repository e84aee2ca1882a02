import MoEJSON
import Foundation

/// tokenizer.json "decoder" stages: each maps the list of token strings to a new list (HF `decode_chain`);
/// the result is their concatenation.
protocol TokenDecoder: Sendable {
    func decode(_ tokens: [String]) throws -> [String]
}

struct SequenceDecoder: TokenDecoder {
    let stages: [any TokenDecoder]
    func decode(_ tokens: [String]) throws -> [String] { try stages.reduce(tokens) { try $1.decode($0) } }
}

struct ByteLevelDecoder: TokenDecoder {
    func decode(_ tokens: [String]) throws -> [String] {
        var bytes: [UInt8] = []
        for t in tokens {
            for s in t.unicodeScalars {
                if let b = ByteLevel.scalarToByte[s.value] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(s).utf8)) }
            }
        }
        return [String(decoding: bytes, as: UTF8.self)]
    }
}

struct MetaspaceDecoder: TokenDecoder {
    let replacement: String
    let stripLeadingSpace: Bool
    func decode(_ tokens: [String]) throws -> [String] {
        tokens.enumerated().map { i, t in
            var s = t.replacingOccurrences(of: replacement, with: " ")
            if i == 0 && stripLeadingSpace && s.hasPrefix(" ") { s.removeFirst() }
            return s
        }
    }
}

struct ReplaceDecoder: TokenDecoder {
    let pattern: ReplacePattern
    let content: String
    func decode(_ tokens: [String]) throws -> [String] { try tokens.map { try pattern.replace(in: $0, with: content) } }
}

/// `<0xXX>` tokens become bytes; consecutive ones are decoded together as UTF-8, or one U+FFFD per byte when invalid.
struct ByteFallbackDecoder: TokenDecoder {
    func decode(_ tokens: [String]) throws -> [String] {
        var out: [String] = []
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            if let s = String(validating: pending, as: UTF8.self) { out.append(s) }
            else { out.append(contentsOf: Array(repeating: "\u{FFFD}", count: pending.count)) }
            pending.removeAll()
        }
        for t in tokens {
            if t.count == 6, t.hasPrefix("<0x"), t.hasSuffix(">"), let b = UInt8(t.dropFirst(3).prefix(2), radix: 16) {
                pending.append(b)
            } else {
                flush()
                out.append(t)
            }
        }
        flush()
        return out
    }
}

struct FuseDecoder: TokenDecoder {
    func decode(_ tokens: [String]) throws -> [String] { [tokens.joined()] }
}

struct StripDecoder: TokenDecoder {
    let content: Character
    let start: Int
    let stop: Int
    func decode(_ tokens: [String]) throws -> [String] {
        tokens.map { t in
            var chars = Array(t)
            var s = 0
            while s < start && s < chars.count && chars[s] == content { s += 1 }
            chars.removeFirst(s)
            var e = 0
            while e < stop && !chars.isEmpty && chars.last == content { chars.removeLast(); e += 1 }
            return String(chars)
        }
    }
}

func makeDecoder(_ node: JSONNode) throws -> (any TokenDecoder)? {
    if node.isNull { return nil }
    switch try node.type() {
    case "Sequence": return SequenceDecoder(stages: try node["decoders"].array().compactMap { try makeDecoder($0) })
    case "ByteLevel": return ByteLevelDecoder()
    case "Metaspace":
        let scheme = try node["prepend_scheme"].optionalString() ?? ((try node["add_prefix_space"].bool(default: true)) ? "always" : "never")
        return MetaspaceDecoder(replacement: try node["replacement"].string(), stripLeadingSpace: scheme != "never")
    case "Replace": return ReplaceDecoder(pattern: try ReplacePattern(node["pattern"]), content: try node["content"].string())
    case "ByteFallback": return ByteFallbackDecoder()
    case "Fuse": return FuseDecoder()
    case "Strip":
        let c = try node["content"].string()
        guard c.count == 1 else { throw node["content"].fail("should be one character") }
        return StripDecoder(content: c.first!, start: try node["start"].int(default: 0), stop: try node["stop"].int(default: 0))
    case let t:
        throw node.fail("unsupported decoder \"\(t)\" (supported: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)")
    }
}
