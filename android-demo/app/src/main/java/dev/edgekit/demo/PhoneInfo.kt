package dev.edgekit.demo

import android.content.Context
import android.os.Build
import android.os.PowerManager

/** The phone, as a bench report's `machine` block describes it (BENCH_PROTOCOL.md). */
object PhoneInfo {
    val device: String get() = "${Build.MANUFACTURER} ${Build.MODEL}"
    val os: String get() = "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})"
    val platform: String get() = "android-${Build.SUPPORTED_ABIS.firstOrNull() ?: "unknown"}"
    val cpuCount: Int get() = Runtime.getRuntime().availableProcessors()

    /** The board or chipset as the kernel names it (e.g. "zuma"): on every API level. */
    val processor: String get() = Build.HARDWARE

    /** The SoC's maker and model (`machine.soc`, e.g. "Google Tensor G3"): API 31+ names it;
     * null on older releases or where the vendor left it unknown. */
    val soc: String?
        get() {
            if (Build.VERSION.SDK_INT < Build.VERSION_CODES.S || Build.SOC_MODEL == Build.UNKNOWN) return null
            val maker = Build.SOC_MANUFACTURER.takeIf { it != Build.UNKNOWN }
            return listOfNotNull(maker, Build.SOC_MODEL).joinToString(" ")
        }

    /** Why `machine.soc` is missing from a report, or null when it is there. */
    val socUnavailableReason: String?
        get() = when {
            Build.VERSION.SDK_INT < Build.VERSION_CODES.S ->
                "SoC not recorded: Build.SOC_MODEL needs API 31, this device runs API ${Build.VERSION.SDK_INT}; " +
                    "machine.processor is the board name (Build.HARDWARE)."
            soc == null -> "SoC not recorded: the vendor left Build.SOC_MODEL unknown."
            else -> null
        }

    /** Why thermal status is missing from a report, or null where the platform exposes it. */
    val thermalUnavailableReason: String?
        get() = if (Build.VERSION.SDK_INT < Build.VERSION_CODES.Q) {
            "Thermal status not recorded: PowerManager.getCurrentThermalStatus needs API 29, " +
                "this device runs API ${Build.VERSION.SDK_INT}."
        } else {
            null
        }

    /** PowerManager's thermal status by its bench-report name, or null below API 29. */
    fun thermalStatus(context: Context): String? {
        if (Build.VERSION.SDK_INT < Build.VERSION_CODES.Q) return null
        val power = context.getSystemService(PowerManager::class.java) ?: return null
        return when (power.currentThermalStatus) {
            PowerManager.THERMAL_STATUS_NONE -> "none"
            PowerManager.THERMAL_STATUS_LIGHT -> "light"
            PowerManager.THERMAL_STATUS_MODERATE -> "moderate"
            PowerManager.THERMAL_STATUS_SEVERE -> "severe"
            PowerManager.THERMAL_STATUS_CRITICAL -> "critical"
            PowerManager.THERMAL_STATUS_EMERGENCY -> "emergency"
            PowerManager.THERMAL_STATUS_SHUTDOWN -> "shutdown"
            else -> "unknown"
        }
    }
}
