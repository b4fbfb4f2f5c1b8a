package moe4j.kernels.cuda;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reads the kernel entry points a module's source defines: plain {@code extern "C" __global__ void NAME(}
 * (or {@code ... void __launch_bounds__(...) NAME(})
 * and those a macro defines for both element types ({@code #define M(T, S) ... NAME_##S(}, expanded
 * by {@code FOR_BOTH(M)} to {@code NAME_f32} and {@code NAME_bf16}). Used to check that every kernel
 * Java launches exists, without a GPU.
 */
final class KernelNames {
    private static final Pattern PLAIN = Pattern.compile("^extern \"C\" __global__ void (?:__launch_bounds__\\([^)]*\\) )?(\\w+)\\(",
            Pattern.MULTILINE);
    private static final Pattern MACRO_DEF = Pattern.compile("#define (\\w+)\\(T, S\\)((?:[^\\n]*\\\\\\n)*[^\\n]*)");
    private static final Pattern MACRO_KERNEL = Pattern.compile("__global__ void (\\w+)_##S\\(");
    private static final Pattern FOR_BOTH = Pattern.compile("^FOR_BOTH\\((\\w+)\\)", Pattern.MULTILINE);

    private KernelNames() {}

    static List<String> parse(String source) {
        List<String> names = new ArrayList<>();
        Matcher m = PLAIN.matcher(source);
        while (m.find()) names.add(m.group(1));
        Map<String, List<String>> macros = new LinkedHashMap<>();
        Matcher d = MACRO_DEF.matcher(source);
        while (d.find()) {
            List<String> kernels = new ArrayList<>();
            Matcher k = MACRO_KERNEL.matcher(d.group(2));
            while (k.find()) kernels.add(k.group(1));
            macros.put(d.group(1), kernels);
        }
        Matcher f = FOR_BOTH.matcher(source);
        while (f.find()) {
            for (String base : macros.getOrDefault(f.group(1), List.of())) {
                names.add(base + "_f32");
                names.add(base + "_bf16");
            }
        }
        return names;
    }
}
