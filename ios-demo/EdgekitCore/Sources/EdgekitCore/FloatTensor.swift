import Foundation

/// A float32 tensor: values in row-major (C) order and the shape they fill.
public struct FloatTensor: Equatable {
    public var data: [Float]
    public let shape: [Int]

    public init(data: [Float], shape: [Int]) {
        precondition(data.count == shape.reduce(1, *), "\(data.count) values cannot fill \(shape)")
        self.data = data
        self.shape = shape
    }

    public init(repeating value: Float, shape: [Int]) {
        self.init(data: [Float](repeating: value, count: shape.reduce(1, *)), shape: shape)
    }
}
