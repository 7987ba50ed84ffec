package dev.edgekit.demo

import android.app.Activity
import android.view.View
import android.widget.Button
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView

/**
 * The screens are plain framework views built in code: three small screens do not need layout
 * XML, a view-binding layer or an AndroidX UI toolkit, and every line of UI stays readable here.
 */
class Screen(private val activity: Activity) {
    val column = LinearLayout(activity).apply {
        orientation = LinearLayout.VERTICAL
        val padding = (16 * activity.resources.displayMetrics.density).toInt()
        setPadding(padding, padding, padding, padding)
    }

    init {
        activity.setContentView(ScrollView(activity).apply { addView(column) })
    }

    fun text(initial: String = "", sizeSp: Float = 16f): TextView =
        TextView(activity).apply {
            text = initial
            textSize = sizeSp
            setTextIsSelectable(true)
        }.also(column::addView)

    fun button(label: String, onClick: () -> Unit): Button =
        Button(activity).apply {
            text = label
            setOnClickListener { onClick() }
        }.also(column::addView)

    fun <T : View> add(view: T): T = view.also(column::addView)
}

/** Work off the UI thread, its result (or its error's message) back on it. */
fun <T> Activity.inBackground(work: () -> T, onError: (String) -> Unit, onDone: (T) -> Unit) {
    Thread {
        val outcome = runCatching(work)
        runOnUiThread {
            outcome.fold(onDone) { error -> onError(error.message ?: error.toString()) }
        }
    }.start()
}
