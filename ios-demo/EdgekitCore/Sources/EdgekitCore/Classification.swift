import Foundation

/// One class of a classifier's top-k: its index in the logits, its label, its softmax score.
public struct Prediction: Equatable, Sendable {
    public let index: Int
    public let label: String
    public let probability: Double

    public init(index: Int, label: String, probability: Double) {
        self.index = index
        self.label = label
        self.probability = probability
    }
}

/// Softmax in float64 after subtracting the largest logit, as edgekit.classify does, so small
/// scores keep their digits.
public func softmax(_ logits: [Float]) -> [Double] {
    guard let largest = logits.max() else { return [] }
    let exps = logits.map { exp(Double($0) - Double(largest)) }
    let total = exps.reduce(0, +)
    return exps.map { $0 / total }
}

/// The k most probable classes, best first; equal probabilities keep index order (a stable
/// sort, as edgekit's `np.argsort(-p, kind="stable")`). Labels come from the manifest.
public func topK(logits: [Float], labels: [String], k: Int) throws -> [Prediction] {
    guard logits.count == labels.count else {
        throw EdgekitCoreError(
            "The model gave \(logits.count) logits but the manifest lists \(labels.count) labels.",
            hint: "use the manifest that was exported with this model file."
        )
    }
    let probabilities = softmax(logits)
    let order = probabilities.indices.sorted { a, b in
        probabilities[a] != probabilities[b] ? probabilities[a] > probabilities[b] : a < b
    }
    return order.prefix(max(k, 0)).map { index in
        Prediction(index: index, label: labels[index], probability: probabilities[index])
    }
}
