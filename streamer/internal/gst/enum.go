package gst

/*
#cgo pkg-config: gstreamer-1.0
#include <stdlib.h>
#include <gst/gst.h>

// metal_enum_nicks writes the nicks of element's enum property prop, one
// per line, into a string the caller frees; NULL when the element or the
// property is missing or the property is not an enum.
static char *metal_enum_nicks(const char *element, const char *prop) {
	GstElementFactory *f = gst_element_factory_find(element);
	if (!f) return NULL;
	GstPluginFeature *loaded = gst_plugin_feature_load(GST_PLUGIN_FEATURE(f));
	gst_object_unref(f);
	if (!loaded) return NULL;
	GType t = gst_element_factory_get_element_type(GST_ELEMENT_FACTORY(loaded));
	gst_object_unref(loaded);
	if (!t) return NULL;
	GObjectClass *klass = g_type_class_ref(t);
	GParamSpec *ps = g_object_class_find_property(klass, prop);
	char *out = NULL;
	if (ps && G_IS_PARAM_SPEC_ENUM(ps)) {
		GEnumClass *ec = G_PARAM_SPEC_ENUM(ps)->enum_class;
		GString *s = g_string_new(NULL);
		for (guint i = 0; i < ec->n_values; i++) {
			g_string_append(s, ec->values[i].value_nick);
			g_string_append_c(s, '\n');
		}
		out = g_string_free(s, FALSE);
	}
	g_type_class_unref(klass);
	return out;
}
*/
import "C"

import (
	"strings"
	"unsafe"
)

// EnumNicks lists the values (nicks) of an element's enum property: how a
// branch tells GStreamer versions apart (nvcudah264enc's preset gained the
// p1..p7 family in 1.24). Nil when the element or property is missing or
// not an enum.
func EnumNicks(element, prop string) []string {
	Init()
	ce, cp := C.CString(element), C.CString(prop)
	defer C.free(unsafe.Pointer(ce))
	defer C.free(unsafe.Pointer(cp))
	out := C.metal_enum_nicks(ce, cp)
	if out == nil {
		return nil
	}
	defer C.g_free(C.gpointer(out))
	return strings.Fields(C.GoString(out))
}
