import MoEJSON
/// A tokenizer.json that cannot be used, named by file and JSON path.
public struct TokenizerError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let problem: String
    public init(file: String, _ problem: String) {
        self.file = file
        self.problem = problem
    }
    public var description: String { "\(file): \(problem)" }
}

/// A regular expression this engine does not accept (message says where).
public struct RegexError: Error, CustomStringConvertible, Equatable {
    public let pattern: String
    public let problem: String
    public var description: String { "regex \(pattern.debugDescription): \(problem)" }
}
