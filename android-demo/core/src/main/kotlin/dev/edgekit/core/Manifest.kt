package dev.edgekit.core

import com.google.gson.JsonObject

/** One named input or output of a model file: static shape, numpy dtype name ("float32"). */
data class TensorSpec(val name: String, val shape: List<Int>, val dtype: String)

enum class ResizeRule(val json: String) { SHORTEST_EDGE("shortest-edge"), EXACT("exact"), NONE("none") }

/** Pillow's resampling filters by the names manifests use. */
enum class Interpolation(val json: String) {
    NEAREST("nearest"), LANCZOS("lanczos"), BILINEAR("bilinear"), BICUBIC("bicubic"),
    BOX("box"), HAMMING("hamming"),
}

enum class CropRule(val json: String) { CENTER("center"), NONE("none") }

enum class ChannelOrder(val json: String) { RGB("RGB"), BGR("BGR") }

enum class Layout(val json: String) { NCHW("NCHW"), NHWC("NHWC") }

/** The manifest's `preprocessing` block (edgekit/models/base.py `Preprocessing`). */
data class Preprocessing(
    val resize: ResizeRule,
    val resizeShortestEdge: Int?,
    val resizeHeight: Int?,
    val resizeWidth: Int?,
    val interpolation: Interpolation,
    val crop: CropRule,
    val cropHeight: Int?,
    val cropWidth: Int?,
    val rescaleFactor: Double,
    /** Per channel, RGB order. */
    val mean: List<Double>,
    val std: List<Double>,
    val channelOrder: ChannelOrder,
    val layout: Layout,
) {
    /** Height of every preprocessed image. */
    val outputHeight: Int get() = if (crop == CropRule.CENTER) cropHeight!! else resizeHeight!!
    val outputWidth: Int get() = if (crop == CropRule.CENTER) cropWidth!! else resizeWidth!!

    companion object {
        /** The block as JSON text (a manifest's, or a contract case's). */
        fun parse(json: String): Preprocessing {
            val reader = JsonReader("The preprocessing block")
            return fromJson(reader.parseObject(json), reader, "")
        }

        internal fun fromJson(obj: JsonObject, r: JsonReader, path: String): Preprocessing {
            val block = Preprocessing(
                resize = r.choice(obj, "resize", path, ResizeRule.values().associateBy { it.json }),
                resizeShortestEdge = r.optInt(obj, "resize_shortest_edge", path),
                resizeHeight = r.optInt(obj, "resize_height", path),
                resizeWidth = r.optInt(obj, "resize_width", path),
                interpolation = r.choice(
                    obj, "interpolation", path, Interpolation.values().associateBy { it.json },
                ),
                crop = r.choice(obj, "crop", path, CropRule.values().associateBy { it.json }),
                cropHeight = r.optInt(obj, "crop_height", path),
                cropWidth = r.optInt(obj, "crop_width", path),
                rescaleFactor = r.double(obj, "rescale_factor", path),
                mean = r.doubles(obj, "mean", path),
                std = r.doubles(obj, "std", path),
                channelOrder = r.choice(
                    obj, "channel_order", path, ChannelOrder.values().associateBy { it.json },
                ),
                layout = if (obj.has("layout")) {
                    r.choice(obj, "layout", path, Layout.values().associateBy { it.json })
                } else {
                    Layout.NCHW
                },
            )
            block.problem()?.let { r.fail("is inconsistent: $it") }
            return block
        }
    }

    /** The same rules as edgekit's validator, so a block edgekit refuses is refused here too. */
    private fun problem(): String? = when {
        resize == ResizeRule.SHORTEST_EDGE && resizeShortestEdge == null ->
            "resize 'shortest-edge' needs resize_shortest_edge"
        resize == ResizeRule.EXACT && (resizeHeight == null || resizeWidth == null) ->
            "resize 'exact' needs resize_height and resize_width"
        crop == CropRule.CENTER && (cropHeight == null || cropWidth == null) ->
            "crop 'center' needs crop_height and crop_width"
        crop == CropRule.NONE && resize != ResizeRule.EXACT ->
            "crop 'none' needs resize 'exact', so every photo gets one size"
        listOfNotNull(resizeShortestEdge, resizeHeight, resizeWidth, cropHeight, cropWidth)
            .any { it < 1 } -> "sizes must be at least 1 pixel"
        mean.size != 3 || std.size != 3 -> "mean and std need 3 values (RGB)"
        std.any { it == 0.0 } -> "std must not contain 0"
        rescaleFactor <= 0.0 -> "rescale_factor must be positive"
        else -> null
    }
}

enum class BetaSchedule(val json: String) {
    LINEAR("linear"), SCALED_LINEAR("scaled_linear"), SQUAREDCOS_CAP_V2("squaredcos_cap_v2"),
}

enum class PredictionType(val json: String) {
    EPSILON("epsilon"), V_PREDICTION("v_prediction"), SAMPLE("sample"),
}

enum class TimestepSpacing(val json: String) {
    LEADING("leading"), TRAILING("trailing"), LINSPACE("linspace"),
}

/** The manifest's `pipeline.scheduler` block (edgekit/scheduling.py `SchedulerSpec`). */
data class SchedulerSpec(
    val algorithm: String,
    val numTrainTimesteps: Int,
    val betaStart: Double,
    val betaEnd: Double,
    val betaSchedule: BetaSchedule,
    val predictionType: PredictionType,
    val timestepSpacing: TimestepSpacing,
    val stepsOffset: Int,
    val setAlphaToOne: Boolean,
    val clipSample: Boolean,
    val clipSampleRange: Double,
    val eta: Double,
    val initNoiseSigma: Double,
) {
    companion object {
        const val DDIM = "ddim"

        fun parse(json: String): SchedulerSpec {
            val reader = JsonReader("The scheduler block")
            return fromJson(reader.parseObject(json), reader, "")
        }

        internal fun fromJson(obj: JsonObject, r: JsonReader, path: String): SchedulerSpec {
            val algorithm = r.string(obj, "algorithm", path)
            if (algorithm != DDIM) {
                r.fail("names sampler '$algorithm'; this app implements: $DDIM")
            }
            val spec = SchedulerSpec(
                algorithm = algorithm,
                numTrainTimesteps = r.int(obj, "num_train_timesteps", path),
                betaStart = r.double(obj, "beta_start", path),
                betaEnd = r.double(obj, "beta_end", path),
                betaSchedule = r.choice(
                    obj, "beta_schedule", path, BetaSchedule.values().associateBy { it.json },
                ),
                predictionType = r.choice(
                    obj, "prediction_type", path, PredictionType.values().associateBy { it.json },
                ),
                timestepSpacing = r.choice(
                    obj, "timestep_spacing", path, TimestepSpacing.values().associateBy { it.json },
                ),
                stepsOffset = r.int(obj, "steps_offset", path),
                setAlphaToOne = r.bool(obj, "set_alpha_to_one", path),
                clipSample = r.bool(obj, "clip_sample", path),
                clipSampleRange = r.double(obj, "clip_sample_range", path),
                eta = r.double(obj, "eta", path),
                initNoiseSigma = r.double(obj, "init_noise_sigma", path),
            )
            if (spec.numTrainTimesteps < 2) r.fail("has num_train_timesteps < 2")
            // edgekit's spec allows only deterministic DDIM with unscaled initial noise.
            if (spec.eta != 0.0) r.fail("has eta ${spec.eta}; only 0 (deterministic DDIM) is defined")
            if (spec.initNoiseSigma != 1.0) r.fail("has init_noise_sigma ${spec.initNoiseSigma}; only 1 is defined")
            return spec
        }
    }
}

/** The manifest's `pipeline` block: how a Stable Diffusion export's components fit. */
data class PipelineInfo(
    val vaeScalingFactor: Double,
    val vaeScaleFactor: Int,
    val latentChannels: Int,
    val latentHeight: Int,
    val latentWidth: Int,
    val imageHeight: Int,
    val imageWidth: Int,
    val textMaxLength: Int,
    /** 1: the UNet is called twice per step (unconditional, then conditional); 2: once. */
    val unetBatch: Int,
    val tokenizerFiles: List<String>,
    val scheduler: SchedulerSpec,
    val schedulerConfigFile: String?,
)

/** One exported model file of an artifact, with its verification verdict. */
data class Component(
    val name: String,
    val modelKind: String,
    val modelFile: String,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    /** "passed", "failed" or "not-checked". */
    val verificationStatus: String,
    val numericsChecked: Boolean,
    val verificationRuntime: String,
    val sizeBytes: Long?,
    val fp32WeightBytes: Long?,
    /** The lowest `sqnr_db` of the verified outputs, null when none has one. */
    val worstSqnrDb: Double? = null,
    /** The first verified output's `top1_agreement`, null when none has one. */
    val top1Agreement: Double? = null,
) {
    /** The verdict in the artifact's words, as bench rows carry it (`fidelity.verification_status`):
     * "verified", "failed" or "structure-only" for "passed", "failed", "not-checked". */
    val artifactStatus: String
        get() = when (verificationStatus) {
            "passed" -> "verified"
            "not-checked" -> "structure-only"
            else -> verificationStatus
        }
}

data class FileEntry(val path: String, val sizeBytes: Long, val sha256: String)

/** What an app needs from an artifact's manifest.json; apps never parse file names. */
data class Manifest(
    val schemaVersion: String,
    val name: String,
    /** "verified", "failed" or "structure-only". */
    val status: String,
    val modelKind: String,
    val randomWeights: Boolean,
    /** "onnx", "executorch", "tflite", "coreml". */
    val format: String,
    val precision: String,
    val preprocessing: Preprocessing?,
    val labels: List<String>?,
    val pipeline: PipelineInfo?,
    val components: List<Component>,
    val files: List<FileEntry>,
    val toolVersions: Map<String, String>,
) {
    val verified: Boolean get() = status == "verified"

    /** The named component, or the only one when `name` is null. */
    fun component(name: String? = null): Component {
        if (name == null && components.size == 1) return components[0]
        return components.firstOrNull { it.name == name }
            ?: throw EdgekitCoreException(
                "Artifact ${this.name} has no component '$name'; it has: " +
                    components.joinToString(", ") { it.name } + ". Hint: pass one of those names.",
            )
    }

    /** The model file of a component, relative to the artifact folder. */
    fun artifactFile(component: String? = null): String = component(component).modelFile

    /** sha256 of a component's model file: how bench rows link device and host runs. */
    fun sha256Of(component: String? = null): String? =
        component(component).modelFile.let { file -> files.firstOrNull { it.path == file }?.sha256 }

    companion object {
        /** Manifest major versions this core reads (edgekit/artifact.py MANIFEST_SCHEMA_VERSION). */
        val READABLE_MAJOR_VERSIONS = listOf("3")

        fun parse(json: String): Manifest {
            val r = JsonReader("manifest.json")
            val obj = r.parseObject(json)
            val version = r.string(obj, "schema_version")
            if (version.substringBefore('.') !in READABLE_MAJOR_VERSIONS) {
                r.fail(
                    "is schema $version; this app reads ${READABLE_MAJOR_VERSIONS.joinToString()}.x " +
                        "(Hint: re-export the artifact with a matching edgekit, or update the app)",
                )
            }
            return Manifest(
                schemaVersion = version,
                name = r.string(obj, "name"),
                status = r.string(obj, "status"),
                modelKind = r.string(obj, "model_kind"),
                randomWeights = r.bool(obj, "random_weights"),
                format = r.string(obj, "format"),
                precision = r.string(obj, "precision"),
                preprocessing = r.optObj(obj, "preprocessing")
                    ?.let { Preprocessing.fromJson(it, r, "preprocessing") },
                labels = if (r.optArray(obj, "labels") != null) r.strings(obj, "labels") else null,
                pipeline = r.optObj(obj, "pipeline")?.let { pipeline(it, r) },
                components = r.objects(obj, "components").mapIndexed { i, c -> component(c, r, "components[$i]") },
                files = r.objects(obj, "files").mapIndexed { i, f ->
                    FileEntry(
                        r.string(f, "path", "files[$i]"),
                        r.double(f, "size_bytes", "files[$i]").toLong(),
                        r.string(f, "sha256", "files[$i]"),
                    )
                },
                toolVersions = r.optObj(obj, "tool_versions")?.entrySet()
                    ?.associate { (key, value) -> key to value.asString } ?: emptyMap(),
            ).also { manifest ->
                if (manifest.components.isEmpty()) r.fail("lists no components")
            }
        }

        private fun component(c: JsonObject, r: JsonReader, path: String): Component {
            val verification = r.obj(c, "verification", path)
            val checked = if (r.optArray(verification, "outputs", "$path.verification") != null) {
                r.objects(verification, "outputs", "$path.verification")
            } else {
                emptyList()
            }
            return Component(
                name = r.string(c, "name", path),
                modelKind = r.string(c, "model_kind", path),
                modelFile = r.string(c, "model_file", path),
                inputs = r.objects(c, "inputs", path).mapIndexed { i, t -> tensor(t, r, "$path.inputs[$i]") },
                outputs = r.objects(c, "outputs", path).mapIndexed { i, t -> tensor(t, r, "$path.outputs[$i]") },
                verificationStatus = r.string(verification, "status", "$path.verification"),
                numericsChecked = r.bool(verification, "numerics_checked", "$path.verification"),
                verificationRuntime = r.string(verification, "runtime", "$path.verification"),
                sizeBytes = r.optDouble(c, "size_bytes", path)?.toLong(),
                fp32WeightBytes = r.optDouble(c, "fp32_weight_bytes", path)?.toLong(),
                worstSqnrDb = checked.mapNotNull { r.optDouble(it, "sqnr_db", "$path.verification.outputs") }.minOrNull(),
                top1Agreement = checked.firstNotNullOfOrNull {
                    r.optDouble(it, "top1_agreement", "$path.verification.outputs")
                },
            )
        }

        private fun tensor(t: JsonObject, r: JsonReader, path: String) =
            TensorSpec(r.string(t, "name", path), r.ints(t, "shape", path), r.string(t, "dtype", path))

        private fun pipeline(p: JsonObject, r: JsonReader): PipelineInfo {
            val path = "pipeline"
            return PipelineInfo(
                vaeScalingFactor = r.double(p, "vae_scaling_factor", path),
                vaeScaleFactor = r.int(p, "vae_scale_factor", path),
                latentChannels = r.int(p, "latent_channels", path),
                latentHeight = r.int(p, "latent_height", path),
                latentWidth = r.int(p, "latent_width", path),
                imageHeight = r.int(p, "image_height", path),
                imageWidth = r.int(p, "image_width", path),
                textMaxLength = r.int(p, "text_max_length", path),
                unetBatch = r.optInt(p, "unet_batch", path) ?: 1,
                tokenizerFiles = if (r.optArray(p, "tokenizer_files", path) != null) {
                    r.strings(p, "tokenizer_files", path)
                } else {
                    emptyList()
                },
                scheduler = SchedulerSpec.fromJson(r.obj(p, "scheduler", path), r, "$path.scheduler"),
                schedulerConfigFile = r.optString(p, "scheduler_config_file", path),
            )
        }
    }
}
