/// Every checkpoint problem names the file and, where there is one, the tensor.
public struct CheckpointError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let tensor: String?
    public let problem: String
    /// The disk filled: resumable work already done is kept for the next run.
    public var diskFull = false

    public init(file: String, tensor: String? = nil, _ problem: String, diskFull: Bool = false) {
        self.file = file
        self.tensor = tensor
        self.problem = problem
        self.diskFull = diskFull
    }

    public var description: String {
        if let tensor { return "\(file): tensor \"\(tensor)\": \(problem)" }
        return "\(file): \(problem)"
    }
}
