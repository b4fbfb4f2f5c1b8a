package moe4j;

import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.noClasses;
import static com.tngtech.archunit.library.Architectures.layeredArchitecture;
import static com.tngtech.archunit.library.dependencies.SlicesRuleDefinition.slices;

import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import com.tngtech.archunit.lang.ArchRule;
import com.tngtech.archunit.library.Architectures.LayeredArchitecture;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The layer table of DESIGN.md, enforced: each package uses only the packages above it in the table
 * (its sub-packages belong to it), the device seam holds, and no packages form a cycle. Measuring tools
 * ({@code moe4j.bench}) stand beside the layers and may use any of them. Only production classes are
 * checked: tests may reach into any layer to compare it with a reference.
 */
class LayeringTest {
    /**
     * DESIGN.md's table, bottom up: a layer may use only the layers before it in this list. {@code text}
     * (tokenizers) sits with the data sources; {@code hf} maps Hugging Face checkpoints onto the model,
     * per expert-parallel rank, so it stands above {@code parallel} and below {@code train}, which starts
     * runs from such folders and saves them back.
     */
    static final List<String> LAYERS = List.of(
            "tensor", "kernels", "distributed", "autograd", "ops", "nn", "parallel", "data", "text", "hf", "train", "cli");

    static JavaClasses classes;

    @BeforeAll
    static void importProductionClasses() {
        classes = new ClassFileImporter()
                .withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_TESTS)
                .withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_JARS)
                .importPackages("moe4j");
    }

    @Test
    void eachPackageUsesOnlyThePackagesAboveItInTheTable() {
        LayeredArchitecture layers = layeredArchitecture().consideringOnlyDependenciesInLayers();
        for (String layer : LAYERS) layers = layers.layer(layer).definedBy("moe4j." + layer + "..");
        for (int i = 1; i < LAYERS.size(); i++) {
            String[] above = LAYERS.subList(0, i).toArray(String[]::new);
            layers = layers.whereLayer(LAYERS.get(i)).mayOnlyAccessLayers(above);
        }
        layers = layers.whereLayer(LAYERS.get(0)).mayNotAccessAnyLayer();
        layers.check(classes);
    }

    @Test
    void nnNeverUsesParallel() {
        check(noClasses().that().resideInAPackage("moe4j.nn..")
                .should().dependOnClassesThat().resideInAPackage("moe4j.parallel..")
                .because("MoEMLP owns a TokenDispatcher; expert parallelism installs one, the layer never calls up"));
    }

    @Test
    void distributedKnowsNothingOfAutogradOrModels() {
        check(noClasses().that().resideInAPackage("moe4j.distributed..")
                .should().dependOnClassesThat().resideInAnyPackage("moe4j.autograd..", "moe4j.nn..")
                .because("process groups move tensors' data and nothing else"));
    }

    @Test
    void kernelsKnowNothingOfAutogradOrDistribution() {
        check(noClasses().that().resideInAPackage("moe4j.kernels..")
                .should().dependOnClassesThat().resideInAnyPackage("moe4j.autograd..", "moe4j.distributed..")
                .because("kernels compute on tensors of one device and nothing else"));
    }

    @Test
    void onlyTheKernelsPackageNamesAKernelImplementation() {
        // the tools may: the GEMM benchmark compares the CPU kernels themselves with OpenBLAS
        check(noClasses().that().resideOutsideOfPackages(concat("moe4j.kernels..", TOOLS))
                .should().dependOnClassesThat().resideInAnyPackage("moe4j.kernels.cpu..", "moe4j.kernels.cuda..")
                .because("operations reach kernels through their tensors' device: Kernels.of(device)"));
    }

    @Test
    void textUsesNoOtherPackage() {
        check(noClasses().that().resideInAPackage("moe4j.text..")
                .should().dependOnClassesThat().resideInAnyPackage(LAYERS.stream().filter(l -> !l.equals("text"))
                        .map(l -> "moe4j." + l + "..").toArray(String[]::new))
                .because("a tokenizer maps strings to token ids and back; it needs no tensors or models"));
    }

    @Test
    void onlyTrainingAndTheCommandsUseTheCheckpointMapping() {
        check(noClasses().that().resideOutsideOfPackages("moe4j.hf..", "moe4j.train..", "moe4j.cli..", "moe4j.bench..")
                .should().dependOnClassesThat().resideInAPackage("moe4j.hf..")
                .because("the model knows nothing of Hugging Face names and layouts; moe4j.hf maps them onto it"));
    }

    @Test
    void packagesFormNoCycles() {
        check(slices().matching("moe4j.(**)").should().beFreeOfCycles());
    }

    private static String[] concat(String first, List<String> tools) {
        List<String> all = new java.util.ArrayList<>(List.of(first));
        for (String t : tools) all.add("moe4j." + t + "..");
        return all.toArray(String[]::new);
    }

    private static void check(ArchRule rule) {
        rule.check(classes);
    }

    /** Tools that measure the layers; they may use any layer, and no layer may use them. */
    static final List<String> TOOLS = List.of("bench");

    @Test
    void everyTopLevelPackageIsALayerOrATool() {
        List<String> unknown = classes.stream()
                .map(c -> c.getPackageName())
                .filter(p -> p.startsWith("moe4j."))
                .map(p -> p.substring("moe4j.".length()).split("\\.")[0])
                .distinct()
                .filter(p -> !LAYERS.contains(p) && !TOOLS.contains(p))
                .sorted()
                .toList();
        org.junit.jupiter.api.Assertions.assertEquals(List.of(), unknown,
                "packages outside DESIGN.md's layer table (add them to LAYERS or TOOLS)");
    }

    @Test
    void noLayerUsesTheTools() {
        check(noClasses().that().resideInAnyPackage(LAYERS.stream().map(l -> "moe4j." + l + "..").toArray(String[]::new))
                .and().resideOutsideOfPackage("moe4j.cli..")
                .should().dependOnClassesThat().resideInAnyPackage(TOOLS.stream().map(t -> "moe4j." + t + "..").toArray(String[]::new))
                .because("benchmarks and checks measure the library; the library does not depend on them"));
    }
}
