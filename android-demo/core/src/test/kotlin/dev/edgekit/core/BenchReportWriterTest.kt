package dev.edgekit.core

import com.google.gson.JsonParser
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.nio.file.Files
import java.time.OffsetDateTime
import java.time.ZoneOffset

class BenchReportWriterTest {
    private val manifest = Manifest.parse(Contract.file("manifest.json").readText())
    private val samples = Contract.json("bench/samples.json").getAsJsonArray("cases")
        .map { it.asJsonObject }
        .first { it.get("name").asString == "noisy-150-runs" }
        .getAsJsonArray("samples_ms").map { it.asDouble }

    private fun report(): BenchReportWriter {
        val device = DeviceInfo(
            model = "Google Pixel 8",
            os = "Android 14 (API 34)",
            platform = "arm64-v8a",
            processor = "Google Tensor G3",
            cpuCount = 9,
            thermalStateAtStart = "none",
            thermalStateAtEnd = "moderate",
        )
        return BenchReportWriter(device, settings = mapOf("app" to "edgekit-android-demo", "mode" to "sustained"))
            .add(
                DeviceMeasurement(
                    manifest = manifest,
                    artifactPath = "/data/user/0/dev.edgekit.demo/files/models/${manifest.name}",
                    runtime = DeviceRuntime("onnxruntime", "1.22.0", threads = 4, delegate = "CPUExecutionProvider"),
                    loadMs = 85.5,
                    firstInferenceMs = 40.25,
                    warmupRuns = 5,
                    samplesMs = samples,
                    peakRssBytes = 210_000_000,
                    memoryIncreaseBytes = 35_000_000,
                    sustained = SustainedRun(durationS = 120.0, windowS = 30.0, windowMediansMs = listOf(30.0, 31.0, 36.0, 41.0)),
                ),
            )
            .add(
                DeviceMeasurement(
                    manifest = manifest,
                    artifactPath = null,
                    runtime = DeviceRuntime("onnxruntime", "1.22.0", threads = 1, delegate = null),
                    loadMs = null,
                    firstInferenceMs = null,
                    warmupRuns = null,
                    samplesMs = emptyList(),
                    error = "ORT could not create a session: out of memory",
                ),
            )
    }

    @Test
    fun writesASchemaReportWithDeviceRows() {
        val created = OffsetDateTime.of(2026, 11, 27, 1, 2, 3, 0, ZoneOffset.UTC)
        val target = System.getProperty("edgekit.report.out")?.let { File(it) }
            ?: File(Files.createTempDirectory("edgekit-report").toFile(), "bench.json")
        report().write(target, created)

        val json = JsonParser.parseString(target.readText()).asJsonObject
        assertEquals("2.0", json.get("schema_version").asString)
        assertEquals("2026-11-27T01:02:03+00:00", json.get("created_utc").asString)
        assertEquals("0.1.0", json.get("edgekit_version").asString) // the exporter's, from the manifest
        assertEquals("Google Pixel 8", json.getAsJsonObject("machine").get("device").asString)
        assertEquals("moderate", json.getAsJsonObject("settings").get("thermal_state_end").asString)
        val rows = json.getAsJsonArray("results").map { it.asJsonObject }
        val ok = rows[0]
        assertEquals("device", ok.get("source").asString)
        assertEquals(manifest.sha256Of(), ok.get("artifact_sha256").asString)
        val latency = ok.getAsJsonObject("latency")
        assertEquals(BenchStats.of(samples).medianMs, latency.get("median_ms").asDouble, 0.0)
        // The windows of the sustained run are its rounds: 30 -> 41 ms is throttling.
        val reliability = ok.getAsJsonObject("reliability")
        assertFalse(reliability.get("reliable").asBoolean)
        assertTrue(reliability.getAsJsonArray("reasons").any { it.asString.startsWith("rounds disagree by") })
        assertEquals("error", rows[1].get("status").asString)
        assertFalse(rows[1].has("latency"))
        assertFalse(File(target.parentFile, ".${target.name}.tmp").exists())
    }
}
