package dev.edgekit.demo

import dev.edgekit.core.BenchReportWriter
import dev.edgekit.core.BenchStats
import dev.edgekit.core.DeviceInfo
import dev.edgekit.core.DeviceMeasurement
import dev.edgekit.core.DeviceRuntime
import dev.edgekit.core.Manifest
import dev.edgekit.core.SustainedRun

/**
 * Measurements -> a bench report (schema 2.1) through the core's BenchReportWriter, which owns
 * the schema: field names, the estimators, the statistics. This file only says what the phone
 * measured and what the platform reports about itself (BENCH_PROTOCOL.md, "The report").
 */
object BenchReports {
    fun write(manifest: Manifest, measurements: List<ComponentMeasurement>, settings: BenchSettings): String {
        val writer = BenchReportWriter(
            device = DeviceInfo(
                model = PhoneInfo.device,
                os = PhoneInfo.os,
                platform = PhoneInfo.platform,
                processor = PhoneInfo.processor,
                cpuCount = PhoneInfo.cpuCount,
                soc = PhoneInfo.soc,
                thermalStateStart = settings.thermalStart,
                thermalStateEnd = settings.thermalEnd,
            ),
            settings = linkedMapOf(
                "runs" to settings.request.runs,
                "warmup" to settings.request.warmup,
                "threads" to settings.threads,
                "sustained_s" to settings.request.sustainedSeconds,
                "component" to settings.request.component,
            ),
        )
        for (measured in measurements) {
            val runtime = measured.runtime
            writer.add(
                DeviceMeasurement(
                    manifest = manifest,
                    component = measured.component.name,
                    artifactPath = settings.request.artifact.absolutePath,
                    runtime = DeviceRuntime(
                        name = runtime?.name ?: runtimeNameOf(manifest.format),
                        version = runtime?.version ?: "unknown",
                        threads = settings.threads,
                        delegate = runtime?.delegate,
                    ),
                    // The first dimension of the first input, as host rows count it.
                    batch = measured.component.inputs.firstOrNull()?.shape?.firstOrNull() ?: 1,
                    loadMs = measured.loadMs,
                    firstInferenceMs = measured.firstInferenceMs,
                    warmupRuns = measured.warmupRuns,
                    samplesMs = measured.samplesMs,
                    memoryIncreaseBytes = measured.nativeHeapIncreaseBytes,
                    sustained = measured.sustainedSeconds?.let {
                        SustainedRun(
                            durationS = it,
                            windowS = SUSTAINED_WINDOW_S,
                            windowMediansMs = measured.windowMediansMs,
                            thermalStates = measured.windowThermalStates,
                        )
                    },
                    error = measured.error,
                ),
            )
            if (measured.samplesTotal > measured.samplesMs.size) {
                writer.addNote(
                    "${measured.component.name}: ${measured.samplesTotal} timed runs; samples_ms " +
                        "keeps a uniform sample of ${measured.samplesMs.size} of them.",
                )
            }
        }
        PhoneInfo.socUnavailableReason?.let(writer::addNote)
        PhoneInfo.thermalUnavailableReason?.let(writer::addNote)
        settings.thermalStart?.takeIf { it != "none" }?.let {
            writer.addWarning("The device was already throttling when the run started (thermal status $it).")
        }
        val seen = listOfNotNull(settings.thermalStart, settings.thermalEnd) + measurements.flatMap { it.windowThermalStates }
        // The worst status seen, unless the warning above already named it.
        THROTTLING_STATUSES.lastOrNull { it in seen }?.takeIf { it != settings.thermalStart }?.let {
            writer.addWarning(
                "The device's thermal status reached '$it' during the run: it throttles there, so " +
                    "later samples are slower than a cool phone's.",
            )
        }
        return writer.toJson()
    }

    /** PowerManager's statuses at which the platform throttles, mildest first. */
    private val THROTTLING_STATUSES = listOf("light", "moderate", "severe", "critical", "emergency", "shutdown")

    /** Sustained mode's window: one median per minute (BENCH_PROTOCOL.md). */
    const val SUSTAINED_WINDOW_S = 60.0

    private fun runtimeNameOf(format: String) = when (format) {
        "tflite" -> "litert"
        "executorch" -> "executorch"
        else -> "onnxruntime"
    }

    /** What the screen shows after a run: one line per component. */
    fun summary(measurements: List<ComponentMeasurement>, thermalStart: String?, thermalEnd: String?): String {
        val lines = measurements.map { measured ->
            val name = measured.component.name
            when {
                measured.error != null -> "$name: failed: ${measured.error}"
                else -> {
                    val stats = BenchStats.of(measured.samplesMs)
                    "%s: median %.2f ms over %d runs (load %.0f ms, first run %.1f ms)".format(
                        name, stats.medianMs, measured.samplesTotal, measured.loadMs, measured.firstInferenceMs,
                    )
                }
            }
        }
        val thermal = if (thermalStart == null) {
            "Thermal status: not exposed below API 29."
        } else {
            "Thermal status: $thermalStart at the start, $thermalEnd at the end."
        }
        return (lines + thermal).joinToString("\n")
    }
}
