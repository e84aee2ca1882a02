import Foundation
import MoEJSON

/// Any JSON value, for configs whose keys vary across transformers versions.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d):
            if d.rounded() == d && abs(d) < 1e15 { try c.encode(Int(d)) } else { try c.encode(d) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public var isNull: Bool { self == .null }
    public var double: Double? { if case .number(let d) = self { return d } else { return nil } }
    /// An integral number that fits an Int exactly (|x| < 2⁵³); 1.5, 1e300 or true are not.
    public var int: Int? { if case .number(let d) = self, d.rounded() == d, abs(d) < 9.0e15 { return Int(d) } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var array: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var object: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
}

extension JSONValue {
    /// A value read by the one JSON reader (`MoEJSON`), which refuses a key given twice in an object.
    public init(_ json: JSON) {
        switch json {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let d, _): self = .number(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JSONValue.init))
        case .object(let m): self = .object(Dictionary(m.map { ($0.key, JSONValue($0.value)) }, uniquingKeysWith: { _, last in last }))
        }
    }

    /// Parses a file's bytes, refusing invalid JSON and duplicate keys with the file named.
    public static func parse(_ data: Data, file: String) throws -> JSONValue {
        do { return JSONValue(try JSON.parse(Array(data))) } catch let e as JSON.ParseError {
            throw CheckpointError(file: file, "is not valid JSON (\(e))")
        }
    }
}
