package dev.edgekit.demo

import android.content.Context
import java.io.File
import java.io.IOException

/** An artifact folder the app can open: bundled in the APK, or pushed into app storage. */
class StoredArtifact(val name: String, val origin: Origin, private val location: String) {
    enum class Origin(val label: String) { ASSETS("bundled"), APP_STORAGE("app storage") }

    /** The folder on disk (asset artifacts are copied out once: runtimes load files by path). */
    fun folder(context: Context): File = when (origin) {
        Origin.APP_STORAGE -> File(location)
        Origin.ASSETS -> ArtifactStore.copyOutOfAssets(context, location)
    }
}

/**
 * Where artifacts live. Bundled: `assets/models/<name>/` (what `edgekit install --app
 * android-demo` fills). App storage: `<external files>/edgekit/artifacts/<name>/`, where
 * `edgekit bench --device adb` pushes them (BENCH_PROTOCOL.md), readable without permissions.
 */
object ArtifactStore {
    const val ASSET_FOLDER = "models"
    const val MANIFEST = "manifest.json"

    fun deviceRoot(context: Context): File =
        File(context.getExternalFilesDir(null) ?: context.filesDir, "edgekit")

    fun artifactsFolder(context: Context) = File(deviceRoot(context), "artifacts")

    fun reportsFolder(context: Context) = File(deviceRoot(context), "reports")

    fun list(context: Context): List<StoredArtifact> {
        val bundled = context.assets.list(ASSET_FOLDER).orEmpty()
            .filter { name -> context.assets.list("$ASSET_FOLDER/$name").orEmpty().contains(MANIFEST) }
            .map { StoredArtifact(it, StoredArtifact.Origin.ASSETS, "$ASSET_FOLDER/$it") }
        val pushed = artifactsFolder(context).listFiles().orEmpty()
            .filter { File(it, MANIFEST).isFile }
            .sortedBy { it.name }
            .map { StoredArtifact(it.name, StoredArtifact.Origin.APP_STORAGE, it.absolutePath) }
        return bundled.sortedBy { it.name } + pushed
    }

    /**
     * Copies `assets/<assetPath>` to app-private storage, once per APK content: a copy whose
     * manifest equals the bundled one is reused. The copy goes to a temporary folder first and is
     * renamed into place, so an interrupted copy is never mistaken for a finished one.
     */
    fun copyOutOfAssets(context: Context, assetPath: String): File {
        val target = File(context.filesDir, assetPath)
        val bundledManifest = context.assets.open("$assetPath/$MANIFEST").use { it.readBytes() }
        val copiedManifest = File(target, MANIFEST)
        if (copiedManifest.isFile && copiedManifest.readBytes().contentEquals(bundledManifest)) {
            return target
        }
        val partial = File(target.parentFile, "${target.name}.partial")
        partial.deleteRecursively()
        copyAssetTree(context, assetPath, partial)
        target.deleteRecursively()
        if (!partial.renameTo(target)) throw IOException("Could not move $partial to $target.")
        return target
    }

    private fun copyAssetTree(context: Context, assetPath: String, destination: File) {
        val children = context.assets.list(assetPath).orEmpty()
        if (children.isEmpty()) {
            destination.parentFile?.mkdirs()
            context.assets.open(assetPath).use { input ->
                destination.outputStream().use { input.copyTo(it) }
            }
            return
        }
        destination.mkdirs()
        for (child in children) copyAssetTree(context, "$assetPath/$child", File(destination, child))
    }
}
