import EdgekitCore
import Foundation

/// What the bench report's `machine` block says about this phone.
enum DeviceInfo {
    /// hw.machine, e.g. "iPhone15,2"; the simulated model in the Simulator.
    static var modelIdentifier: String {
        if let simulated = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] {
            return simulated
        }
        var system = utsname()
        uname(&system)
        return withUnsafeBytes(of: &system.machine) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// "17.4.1". From ProcessInfo, not UIDevice, which is main-actor only.
    static var osVersion: String {
        let version = ProcessInfo.processInfo.operatingSystemVersion
        return "\(version.majorVersion).\(version.minorVersion).\(version.patchVersion)"
    }

    /// "iOS 17.4.1" (the app is built for iOS only; iPadOS reports the same version line).
    static var osDescription: String { "iOS \(osVersion)" }

    /// Arm features that change which kernels Core ML and BNNS pick (sysctl hw.optional.arm).
    static let featureFlags = [
        ("hw.optional.arm.FEAT_DotProd", "dotprod"), ("hw.optional.arm.FEAT_I8MM", "i8mm"),
        ("hw.optional.arm.FEAT_BF16", "bf16"), ("hw.optional.arm.FEAT_FP16", "fp16"),
        ("hw.optional.arm.FEAT_SME", "sme"), ("hw.optional.arm.FEAT_SME2", "sme2"),
    ]

    static func sysctlInt(_ name: String) -> Int? {
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        return sysctlbyname(name, &value, &size, nil, 0) == 0 ? Int(value) : nil
    }

    static var cpuFlags: [String] {
        featureFlags.compactMap { sysctlInt($0.0) == 1 ? $0.1 : nil }
    }

    /// iOS does not name its SoC; the performance and efficiency core counts and the model
    /// identifier pin it down.
    static var processor: String {
        let performance = sysctlInt("hw.perflevel0.physicalcpu")
        let efficiency = sysctlInt("hw.perflevel1.physicalcpu")
        let cores = performance.map { p in "\(p)P+\(efficiency ?? 0)E cores" }
        return ["arm64 Apple SoC of \(modelIdentifier)", cores].compactMap { $0 }
            .joined(separator: ", ")
    }

    /// The `machine` block; `soc` stays nil: iOS has no API that names the chip.
    static func machine(thermalStateStart: String, thermalStateEnd: String) -> BenchReport.Machine {
        BenchReport.Machine(
            os: osDescription,
            platform: "iOS-\(osVersion)-arm64-\(modelIdentifier)",
            processor: processor,
            cpuCount: ProcessInfo.processInfo.activeProcessorCount,
            cpuFlags: cpuFlags,
            device: modelIdentifier,
            thermalStateStart: thermalStateStart,
            thermalStateEnd: thermalStateEnd
        )
    }

    /// ProcessInfo.thermalState by name: nominal, fair, serious (throttling), critical.
    static var thermalState: String {
        switch ProcessInfo.processInfo.thermalState {
        case .nominal: return "nominal"
        case .fair: return "fair"
        case .serious: return "serious"
        case .critical: return "critical"
        @unknown default: return "unknown"
        }
    }

    /// The app's physical footprint (task_vm_info.phys_footprint): what iOS's memory limit
    /// counts. iOS has no per-process peak RSS.
    static func physicalFootprintBytes() -> Int? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(
            MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size
        )
        let result = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        return result == KERN_SUCCESS ? Int(info.phys_footprint) : nil
    }
}
