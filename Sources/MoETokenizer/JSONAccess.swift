import MoEJSON
/// Typed reads from tokenizer.json, each failure naming the file and the JSON path.
struct JSONNode {
    let value: JSON?
    let path: String
    let file: String

    func fail(_ problem: String) -> TokenizerError { TokenizerError(file: file, "\(path): \(problem)") }

    subscript(key: String) -> JSONNode {
        var v: JSON? = nil
        if case .object(let members)? = value { v = members.first(where: { $0.key == key })?.value }
        return JSONNode(value: v, path: "\(path).\(key)", file: file)
    }

    var isNull: Bool {
        if case .null? = value { return true }
        return value == nil
    }

    var members: [(key: String, value: JSON)]? {
        if case .object(let m)? = value { return m }
        return nil
    }

    var stringValue: String? { if case .string(let s)? = value { return s } else { return nil } }

    func string() throws -> String {
        guard let s = stringValue else { throw fail(isNull ? "missing" : "should be a string") }
        return s
    }
    func optionalString() throws -> String? { isNull ? nil : try string() }

    func bool(default d: Bool) throws -> Bool {
        if isNull { return d }
        guard case .bool(let b)? = value else { throw fail("should be true or false") }
        return b
    }

    func int() throws -> Int {
        guard case .number(let d, true)? = value, let i = Int(exactly: d) else { throw fail(isNull ? "missing" : "should be an integer") }
        return i
    }
    func int(default d: Int) throws -> Int { isNull ? d : try int() }

    func double() -> Double? { if case .number(let d, _)? = value { return d } else { return nil } }

    func array() throws -> [JSONNode] {
        guard case .array(let a)? = value else { throw fail(isNull ? "missing" : "should be a list") }
        return a.enumerated().map { JSONNode(value: $0.element, path: "\(path)[\($0.offset)]", file: file) }
    }

    /// The component type ("type" key).
    func type() throws -> String { try self["type"].string() }
}

extension JSONNode {
    /// An unsigned integer (serde's usize/u32): a negative, fractional or non-number value is refused, as HF refuses it.
    func unsigned(max: Int = Int(UInt32.max)) throws -> Int {
        let v = try int()
        guard v >= 0, v <= max else { throw fail("should be an integer in 0…\(max), got \(v)") }
        return v
    }

    /// One of `choices` (a serde enum spelled as a string).
    func oneOf(_ choices: [String]) throws -> String {
        let s = try string()
        guard choices.contains(s) else { throw fail("is \"\(s)\"; it should be one of \(choices.joined(separator: ", "))") }
        return s
    }
}
