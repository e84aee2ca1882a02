/// A JSON parser that keeps text exactly. Foundation's JSONSerialization drops a U+FEFF at the start of a
/// string (a real Mixtral vocabulary entry), and Swift dictionaries keyed by String merge canonically
/// equivalent keys (U+212B and U+00C5); tokenizer files need every scalar kept, and object members in order.
/// An object that gives one key twice (byte for byte) is refused: Python's json and serde keep the last value,
/// so such a file means two things, and no input of MoEPress may be ambiguous.
public indirect enum JSON: Sendable {
    case null
    case bool(Bool)
    case number(Double, isInteger: Bool)
    case string(String)
    case array([JSON])
    case object([(key: String, value: JSON)])

    public struct ParseError: Error, CustomStringConvertible {
        public let offset: Int
        public let problem: String
        public var description: String { "invalid JSON at byte \(offset): \(problem)" }
    }

    public static func parse(_ bytes: [UInt8]) throws -> JSON {
        var p = Parser(bytes: bytes)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        if p.i != bytes.count { throw ParseError(offset: p.i, problem: "trailing characters") }
        return v
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0

        func fail(_ s: String) -> ParseError { ParseError(offset: i, problem: s) }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func expect(_ word: String) throws {
            for b in word.utf8 {
                guard i < bytes.count, bytes[i] == b else { throw fail("expected \(word)") }
                i += 1
            }
        }

        mutating func value(depth: Int) throws -> JSON {
            guard depth < 512 else { throw fail("nested too deeply") }
            guard i < bytes.count else { throw fail("unexpected end") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var members: [(key: String, value: JSON)] = []
                var seen = Set<[UInt8]>()
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                    let keyStart = i
                    let k = try string()
                    guard seen.insert(Array(k.utf8)).inserted else {
                        i = keyStart
                        throw fail("the key \"\(k)\" appears twice in one object")
                    }
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    i += 1
                    skipSpace()
                    members.append((k, try value(depth: depth + 1)))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unterminated object") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSON] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unterminated array") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            default:
                return try number()
            }
        }

        mutating func number() throws -> JSON {
            let start = i
            var integer = true
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
            while i < bytes.count {
                let c = bytes[i]
                if c >= 0x30 && c <= 0x39 { i += 1 }
                else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") { integer = false; i += 1 }
                else { break }
            }
            guard i > start, let d = Double(String(decoding: bytes[start..<i], as: UTF8.self)) else { throw fail("invalid value") }
            return .number(d, isInteger: integer)
        }

        mutating func string() throws -> String {
            i += 1  // opening quote
            var out: [UInt8] = []
            var runStart = i
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") {
                    out.append(contentsOf: bytes[runStart..<i])
                    i += 1
                    break
                }
                if c == UInt8(ascii: "\\") {
                    out.append(contentsOf: bytes[runStart..<i])
                    i += 1
                    guard i < bytes.count else { throw fail("unterminated escape") }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var v = try hex4()
                        if (0xD800...0xDBFF).contains(v), i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                            i += 2
                            let lo = try hex4()
                            if (0xDC00...0xDFFF).contains(lo) { v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00) }
                            else { out.append(contentsOf: Array("\u{FFFD}".utf8)); v = lo }
                        }
                        let scalar = Unicode.Scalar(v) ?? "\u{FFFD}"
                        out.append(contentsOf: Array(String(scalar).utf8))
                    default: throw fail("invalid escape")
                    }
                    runStart = i
                    continue
                }
                if c < 0x20 { throw fail("control character in string") }
                i += 1
            }
            return String(decoding: out, as: UTF8.self)
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16) else {
                throw fail("invalid \\u escape")
            }
            i += 4
            return v
        }
    }
}

extension JSON {
    /// An object's members by key (the parser has refused a key given twice).
    public var members: [String: JSON]? {
        guard case .object(let m) = self else { return nil }
        return Dictionary(m.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    }
    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    /// An integral number that fits an Int exactly; 1.5, true or "1" are not.
    public var int: Int? { if case .number(let d, _) = self, d.rounded() == d, abs(d) < 9.0e15 { return Int(d) } else { return nil } }
    public var isNull: Bool { if case .null = self { return true } else { return false } }
    public var stringList: [String]? {
        guard case .array(let a) = self else { return nil }
        let s = a.compactMap(\.string)
        return s.count == a.count ? s : nil
    }

    /// What the value is, for messages ("a list", "a number").
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "true/false"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }

    /// The objects of a JSONL text, one a non-blank line, with their 1-based line numbers. A line that is not a JSON
    /// object (or gives a key twice) throws `problem(line, message)`'s error, so every reader names the file and line.
    public static func lines(_ text: String, limit: Int? = nil, problem: (Int, String) -> any Error) throws -> [(line: Int, fields: [String: JSON])] {
        var out: [(line: Int, fields: [String: JSON])] = []
        // Lines are cut at each LF byte (a CRLF file's CR is trimmed below; Swift's split on "\n" would not cut "\r\n").
        for (n, line) in Array(text.utf8).split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            if let limit, out.count >= limit { break }
            var bytes = line[...]
            while let b = bytes.first, b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A { bytes = bytes.dropFirst() }
            while let b = bytes.last, b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A { bytes = bytes.dropLast() }
            if bytes.isEmpty { continue }
            let value: JSON
            do { value = try JSON.parse(Array(bytes)) } catch { throw problem(n + 1, "not valid JSON (\(error))") }
            guard let fields = value.members else { throw problem(n + 1, "not a JSON object") }
            out.append((n + 1, fields))
        }
        return out
    }
}
