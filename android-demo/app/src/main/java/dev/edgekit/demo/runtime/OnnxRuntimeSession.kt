package dev.edgekit.demo.runtime

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import dev.edgekit.demo.BuildConfig
import java.io.File
import java.nio.FloatBuffer
import java.nio.IntBuffer

/**
 * `.onnx` on ONNX Runtime Android with the CPU execution provider, as the onnx-cpu target
 * profile sets it up. Loaded from its file path, so weights stored as external data beside it
 * (edgekit writes them for models over 2 GB) are found.
 */
class OnnxRuntimeSession(
    modelFile: File,
    threads: Int,
    private val outputNames: List<String>,
) : InferenceRuntime {
    private val environment: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val options = OrtSession.SessionOptions().apply {
        setIntraOpNumThreads(threads)
        setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
    }
    private val session: OrtSession = environment.createSession(modelFile.absolutePath, options)

    override val description = RuntimeDescription(
        "onnxruntime",
        BuildConfig.ONNXRUNTIME_VERSION,
        "CPUExecutionProvider",
        threads,
    )

    override fun run(inputs: List<ModelInput>): List<FloatArray> {
        val tensors = inputs.associate { input ->
            input.name to when (val values = input.values) {
                is InputValues.Floats ->
                    OnnxTensor.createTensor(environment, FloatBuffer.wrap(values.data), input.shape)
                is InputValues.Ints ->
                    OnnxTensor.createTensor(environment, IntBuffer.wrap(values.data), input.shape)
            }
        }
        try {
            session.run(tensors, outputNames.toSet()).use { result ->
                return outputNames.map { name ->
                    val buffer = (result.get(name).get() as OnnxTensor).floatBuffer
                    FloatArray(buffer.remaining()).also { buffer.get(it) }
                }
            }
        } finally {
            tensors.values.forEach { it.close() }
        }
    }

    override fun close() {
        session.close()
        options.close()
    }
}
