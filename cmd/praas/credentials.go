package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/praas-dev/praas/client"
)

// EnvToken is the API key the client commands send; without it they use the
// key the config file keeps for the endpoint.
const EnvToken = "PRAAS_TOKEN"

// EnvConfig overrides where the config file is.
const EnvConfig = "PRAAS_CONFIG"

// config is the CLI's config file: an API key per control-plane endpoint.
type config struct {
	Tokens map[string]string `json:"tokens"`
}

// configPath is $PRAAS_CONFIG, else $XDG_CONFIG_HOME/praas/config.json,
// else ~/.config/praas/config.json.
func configPath() (string, error) {
	if p := os.Getenv(EnvConfig); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("config file: %w", err)
	}
	return filepath.Join(dir, "praas", "config.json"), nil
}

func loadConfig() (config, string, error) {
	cfg := config{Tokens: map[string]string{}}
	path, err := configPath()
	if err != nil {
		return cfg, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, path, nil
	}
	if err != nil {
		return cfg, path, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, path, fmt.Errorf("config file %s: %w", path, err)
	}
	if cfg.Tokens == nil {
		cfg.Tokens = map[string]string{}
	}
	return cfg, path, nil
}

// saveToken keeps token as the key of endpoint in the config file (0600).
func saveToken(endpoint, token string) (string, error) {
	cfg, path, err := loadConfig()
	if err != nil {
		return path, err
	}
	cfg.Tokens[normalizeEndpoint(endpoint)] = token
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return path, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return path, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return path, err
	}
	return path, os.Rename(tmp, path)
}

func normalizeEndpoint(e string) string {
	if e == "" {
		e = client.DefaultEndpoint
	}
	return strings.TrimRight(e, "/")
}

// endpoint is the control plane the client commands talk to.
func endpoint() string { return normalizeEndpoint(os.Getenv(EnvEndpoint)) }

// token is the API key for the current endpoint: $PRAAS_TOKEN, else the
// config file's ("" if none; the control plane then answers 401).
func token() string {
	if t := os.Getenv(EnvToken); t != "" {
		return t
	}
	cfg, _, err := loadConfig()
	if err != nil {
		return ""
	}
	return cfg.Tokens[endpoint()]
}

func (c *cli) loginCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "login TOKEN",
		Short: "Keep an API key for $PRAAS_ENDPOINT in the config file",
		Long: `Keep an API key (an admin key or an application's) for the control plane at
$PRAAS_ENDPOINT in the config file ($PRAAS_CONFIG, default
~/.config/praas/config.json, mode 0600). The client commands use it unless
$PRAAS_TOKEN is set. praas up does this itself for the admin key it makes on
its first start.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			path, err := saveToken(endpoint(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "key for %s kept in %s\n", endpoint(), path)
			return nil
		},
	}
}

func (c *cli) keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage API keys",
		Long: `Manage API keys. An application's key acts on that application only; an admin
key (--admin) acts on everything. A key's token is shown once, when it is made.`,
	}
	var admin bool
	var name string
	// completeKeyArgs completes [APP] and then, if ids of them follow, key ids.
	completeKeyArgs := func(ids int) cobra.CompletionFunc {
		return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch {
			case !admin && len(args) == 0:
				return c.completeApps(toComplete), cobra.ShellCompDirectiveNoFileComp
			case ids == 1 && admin && len(args) == 0:
				return c.completeKeyIDs("", toComplete), cobra.ShellCompDirectiveNoFileComp
			case ids == 1 && !admin && len(args) == 1:
				return c.completeKeyIDs(args[0], toComplete), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
	appArg := func(cmd *cobra.Command, args []string) (string, error) {
		switch {
		case admin && len(args) == 0:
			return "", nil
		case !admin && len(args) == 1:
			return args[0], nil
		}
		return "", usagef(cmd, "give an APP, or --admin for the admin keys")
	}
	printKey := func(k client.Key) error {
		if c.json {
			return c.printJSON(k)
		}
		fmt.Fprintf(c.stdout, "key %s made; its token, shown only now:\n%s\n", k.ID, k.Token)
		return nil
	}
	create := &cobra.Command{
		Use:               "create [APP]",
		Short:             "Make a key for APP (or an admin key with --admin)",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeKeyArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, err := appArg(cmd, args)
			if err != nil {
				return err
			}
			k, err := c.client().CreateKey(c.ctx, app, name)
			if err != nil {
				return err
			}
			return printKey(k)
		},
	}
	create.Flags().StringVar(&name, "name", "", "a name to tell the key apart")
	list := &cobra.Command{
		Use:               "list [APP]",
		Short:             "List the keys of APP (or the admin keys with --admin)",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeKeyArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, err := appArg(cmd, args)
			if err != nil {
				return err
			}
			keys, err := c.client().ListKeys(c.ctx, app)
			if err != nil {
				return err
			}
			return c.print(keys, func(io.Writer) {
				c.table("ID\tAPP\tNAME\tCREATED", func(w io.Writer) {
					for _, k := range keys {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.ID, orDash(k.App), orDash(k.Name), k.CreatedAt.Format(time.RFC3339))
					}
				})
			})
		},
	}
	idArgs := func(cmd *cobra.Command, args []string) (string, string, error) {
		if admin {
			if len(args) != 1 {
				return "", "", usagef(cmd, "give the key ID")
			}
			return "", args[0], nil
		}
		if len(args) != 2 {
			return "", "", usagef(cmd, "give APP and the key ID, or --admin and the key ID")
		}
		return args[0], args[1], nil
	}
	revoke := &cobra.Command{
		Use:               "revoke [APP] ID",
		Short:             "Revoke a key: it stops working",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKeyArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, id, err := idArgs(cmd, args)
			if err != nil {
				return err
			}
			if err := c.client().RevokeKey(c.ctx, app, id); err != nil {
				return err
			}
			c.say("key %s revoked", id)
			return nil
		},
	}
	rotate := &cobra.Command{
		Use:               "rotate [APP] ID",
		Short:             "Replace a key with a new one; the old one stops working",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKeyArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, id, err := idArgs(cmd, args)
			if err != nil {
				return err
			}
			k, err := c.client().RotateKey(c.ctx, app, id)
			if err != nil {
				return err
			}
			return printKey(k)
		},
	}
	cmd.PersistentFlags().BoolVar(&admin, "admin", false, "act on the admin keys instead of an application's")
	cmd.AddCommand(create, list, revoke, rotate)
	return cmd
}
