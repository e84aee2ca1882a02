import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Working memory backed by a file instead of anonymous memory: a store too large for the memory budget
/// (a layer's fitness cache) lives in a shared mapping of a temporary file that is
/// unlinked as soon as it is created, so the kernel pages it to disk under pressure, it never counts as
/// anonymous memory, and nothing is left behind whatever way the process ends.
public final class ScratchFile: @unchecked Sendable {
    public let bytes: Int
    let base: UnsafeMutableRawPointer

    /// `directory`: where the file is made (default $TMPDIR or /tmp).
    public init(bytes: Int, directory: String? = nil) throws {
        let dir = directory ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array("\(dir)/moepress-scratch-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw ScratchError("cannot create a scratch file in \(dir) (\(String(cString: strerror(errno))))") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer { close(fd) }
        self.bytes = max(bytes, 1)
        // Blocks reserved first: a write to a mapped page the disk has no room for would be a SIGBUS.
        let r = posix_fallocate(fd, 0, off_t(self.bytes))
        if r == ENOSPC || r == EDQUOT {
            throw ScratchError("\(dir): the disk is full: scratch space needs \(formatBytes(self.bytes)) (set TMPDIR to a folder with room)")
        }
        guard ftruncate(fd, off_t(self.bytes)) == 0, let p = mmap(nil, self.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw ScratchError("cannot map \(formatBytes(bytes)) of scratch space in \(dir) (\(String(cString: strerror(errno))))")
        }
        base = p
    }

    deinit { munmap(base, bytes) }

    /// `bytes` of zero-filled storage: anonymous memory when that is at most `inMemory`, else a scratch file.
    /// The pointer lives as long as `owner`.
    public static func storage(bytes: Int, inMemory: Int, directory: String? = nil) throws -> (pointer: UnsafeMutableRawPointer, owner: AnyObject, spilled: Bool) {
        if bytes <= inMemory {
            let t = Tensor(zeros: [(max(bytes, 4) + 3) / 4])
            return (UnsafeMutableRawPointer(t.data), t, false)
        }
        let f = try ScratchFile(bytes: bytes, directory: directory)
        return (f.base, f, true)
    }
}

public struct ScratchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
